package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// natsOptions returns the options of every connection Sluice opens: the
// services of `sluice run` (bus.connect) and the operator commands
// (connectCLI). It names the connection sluice-<name>, sets the inbox
// prefix and an async error handler (a permissions violation is reported
// there, not by the call that caused it), and, for nats.url, the
// credentials and TLS. The embedded server (no nats.url) listens on
// loopback without auth or TLS, so those keys are refused there (validate).
func natsOptions(c NATSConfig, name string, onAsyncErr func(error)) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name("sluice-" + name)}
	if onAsyncErr != nil {
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { onAsyncErr(err) }))
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	if c.URL == "" {
		return opts, nil
	}
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed_file: %w", err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	if t := c.TLS; t.on() {
		// Secure first: it sets the tls.Config the others add to. The CA
		// and the client pair are re-read on every (re)connect.
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}))
		if t.CAFile != "" {
			opts = append(opts, nats.RootCAs(t.CAFile))
		}
		if t.CertFile != "" {
			opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
		}
	}
	return opts, nil
}

func (t NATSTLSConfig) on() bool { return t != NATSTLSConfig{} }

// logAsyncErr logs what the server refused or reported on connection name.
func logAsyncErr(log zerolog.Logger, name string) func(error) {
	return func(err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			log.Error().Err(err).Str("conn", name).
				Msg("NATS refused a publish or subscribe: the user's permissions lack it (docs/runbook.md, permissions violation)")
			return
		}
		log.Warn().Err(err).Str("conn", name).Msg("NATS async error")
	}
}

// connectError wraps a failed connect with the (redacted) URL and a hint
// naming the config key to check.
func connectError(rawURL string, err error, extra string) error {
	hint := extra
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		hint = "check nats.user/nats.password, creds_file, nkey_seed_file or token"
	case errors.As(err, &unknownCA):
		hint = "the server's certificate is not signed by nats.tls.ca_file (or a system root)"
	case errors.As(err, &badHost):
		hint = "the server's certificate does not name the host dialed: set nats.tls.server_name or dial a name it has"
	case errors.Is(err, nats.ErrSecureConnRequired):
		hint = "the server requires TLS: set nats.tls.ca_file (or use tls:// with a publicly trusted certificate)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		hint = "the server does not offer TLS: remove nats.tls.* or enable tls on the server"
	}
	if hint != "" {
		return fmt.Errorf("connect to NATS at %s (%s): %w", redactURL(rawURL), hint, err)
	}
	return fmt.Errorf("connect to NATS at %s: %w", redactURL(rawURL), err)
}

var inboxPrefixRe = regexp.MustCompile(`^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$`)

// validate checks the auth and TLS keys (one auth method, readable files,
// cert and key together) and, without nats.url, the embedded server's.
func (c NATSConfig) validate() error {
	var errs []error
	if c.InboxPrefix != "" && !inboxPrefixRe.MatchString(c.InboxPrefix) {
		errs = append(errs, fmt.Errorf("nats.inbox_prefix: %q must be subject tokens (A-Z a-z 0-9 _ - $) joined by dots, no wildcards", c.InboxPrefix))
	}
	if c.URL == "" {
		for _, k := range c.securityKeys() {
			errs = append(errs, fmt.Errorf("nats.%s: only used with nats.url (the embedded server listens on loopback without auth or TLS)", k))
		}
		errs = append(errs, c.Embedded.Validate())
		return errors.Join(errs...)
	}
	var methods []string
	for _, m := range []struct {
		key string
		set bool
	}{{"creds_file", c.CredsFile != ""}, {"nkey_seed_file", c.NkeySeedFile != ""}, {"user", c.User != ""}, {"token", c.Token != ""}} {
		if m.set {
			methods = append(methods, m.key)
		}
	}
	if len(methods) > 1 {
		errs = append(errs, fmt.Errorf("nats: %s are set: use one auth method (creds_file, nkey_seed_file, user/password or token)", strings.Join(methods, ", ")))
	}
	if c.User != "" && c.Password == "" {
		errs = append(errs, errors.New("nats.password: required with nats.user"))
	}
	if c.Password != "" && c.User == "" {
		errs = append(errs, errors.New("nats.user: required with nats.password"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("nats.tls.cert_file and nats.tls.key_file: set both (mutual TLS) or neither"))
	}
	for _, f := range []struct{ key, path string }{
		{"creds_file", c.CredsFile}, {"nkey_seed_file", c.NkeySeedFile},
		{"tls.ca_file", c.TLS.CAFile}, {"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile},
	} {
		if f.path != "" {
			errs = append(errs, readable("nats."+f.key, f.path))
		}
	}
	return errors.Join(errs...)
}

// securityKeys lists the auth and TLS keys that are set.
func (c NATSConfig) securityKeys() []string {
	var ks []string
	for _, k := range []struct {
		key string
		set bool
	}{
		{"creds_file", c.CredsFile != ""}, {"nkey_seed_file", c.NkeySeedFile != ""}, {"user", c.User != ""},
		{"password", c.Password != ""}, {"token", c.Token != ""}, {"tls.ca_file", c.TLS.CAFile != ""},
		{"tls.cert_file", c.TLS.CertFile != ""}, {"tls.key_file", c.TLS.KeyFile != ""}, {"tls.server_name", c.TLS.ServerName != ""},
	} {
		if k.set {
			ks = append(ks, k.key)
		}
	}
	return ks
}

// readable reports a file that cannot be opened for reading, or a directory.
func readable(key, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	} else if st.IsDir() {
		return fmt.Errorf("%s: %s is a directory", key, path)
	}
	return nil
}

// redacted masks the password, the token and a password in the URLs.
func (c NATSConfig) redacted() NATSConfig {
	if c.Password != "" {
		c.Password = "<redacted>"
	}
	if c.Token != "" {
		c.Token = "<redacted>"
	}
	c.URL = redactURL(c.URL)
	return c
}

// redactURL masks the password (or a lone token) of each comma-separated
// URL: nats://user:secret@host → nats://user:xxxxx@host.
func redactURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			if strings.Contains(p, "@") {
				parts[i] = "<redacted URL>"
			}
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
