package app

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/config"
	"sluice.dev/mesh/meshtest"
)

// The nats.* auth and TLS keys load from SLUICE_NATS_* variables and are
// validated: one auth method, readable files, cert and key together, and
// none of them without nats.url.
func TestNATSSecurityConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f.pem")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	missing := filepath.Join(dir, "missing.pem")
	url := map[string]string{"SLUICE_NATS_URL": "nats://127.0.0.1:4222"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"SLUICE_NATS_URL": "nats://127.0.0.1:4222"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // each a key named by the error; none: valid
		check   func(t *testing.T, c NATSConfig)
	}{
		{name: "no auth", env: url},
		{name: "user and password from the environment",
			env: with("SLUICE_NATS_USER", "sluice", "SLUICE_NATS_PASSWORD", "pw", "SLUICE_NATS_TLS_CA_FILE", file,
				"SLUICE_NATS_TLS_SERVER_NAME", "nats.internal", "SLUICE_NATS_INBOX_PREFIX", "_INBOX_producer"),
			check: func(t *testing.T, c NATSConfig) {
				require.Equal(t, NATSConfig{URL: url["SLUICE_NATS_URL"], User: "sluice", Password: "pw", InboxPrefix: "_INBOX_producer",
					TLS: NATSTLSConfig{CAFile: file, ServerName: "nats.internal"}, Embedded: c.Embedded}, c)
			}},
		{name: "mutual TLS and creds", env: with("SLUICE_NATS_CREDS_FILE", file, "SLUICE_NATS_TLS_CERT_FILE", file, "SLUICE_NATS_TLS_KEY_FILE", file)},
		{name: "nkey seed", env: with("SLUICE_NATS_NKEY_SEED_FILE", file)},
		{name: "token", env: with("SLUICE_NATS_TOKEN", "t0k")},
		{name: "two auth methods", env: with("SLUICE_NATS_TOKEN", "t", "SLUICE_NATS_USER", "u", "SLUICE_NATS_PASSWORD", "p"),
			wantErr: []string{"one auth method"}},
		{name: "password without user", env: with("SLUICE_NATS_PASSWORD", "p"), wantErr: []string{"nats.user"}},
		{name: "user without password", env: with("SLUICE_NATS_USER", "u"), wantErr: []string{"nats.password"}},
		{name: "cert without key", env: with("SLUICE_NATS_TLS_CERT_FILE", file), wantErr: []string{"nats.tls.key_file"}},
		{name: "missing files", env: with("SLUICE_NATS_TLS_CA_FILE", missing, "SLUICE_NATS_CREDS_FILE", missing),
			wantErr: []string{"nats.tls.ca_file", "nats.creds_file"}},
		{name: "a directory", env: with("SLUICE_NATS_NKEY_SEED_FILE", dir), wantErr: []string{"nats.nkey_seed_file"}},
		{name: "bad inbox prefix", env: with("SLUICE_NATS_INBOX_PREFIX", "_INBOX.>"), wantErr: []string{"nats.inbox_prefix"}},
		{name: "auth without nats.url", env: map[string]string{"SLUICE_NATS_USER": "u", "SLUICE_NATS_TLS_CA_FILE": file},
			wantErr: []string{"nats.user: only used with nats.url", "nats.tls.ca_file: only used with nats.url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := LoadConfig("", "all")
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				if tt.check != nil {
					tt.check(t, c.NATS)
				}
				_, err := natsOptions(c.NATS, "test", nil)
				if tt.env["SLUICE_NATS_NKEY_SEED_FILE"] == "" { // f.pem is no seed
					require.NoError(t, err)
				}
				return
			}
			require.ErrorIs(t, err, config.ErrInvalid)
			for _, w := range tt.wantErr {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// natsOptions turns the keys into the client's options; the embedded
// server (no URL) gets only the name and inbox prefix.
func TestNATSOptions(t *testing.T) {
	p := meshtest.NewPKI(t).CAFile
	apply := func(c NATSConfig) nats.Options {
		t.Helper()
		opts, err := natsOptions(c, "svc", func(error) {})
		require.NoError(t, err)
		o := nats.GetDefaultOptions()
		for _, f := range opts {
			require.NoError(t, f(&o))
		}
		return o
	}
	o := apply(NATSConfig{URL: "nats://h:4222", User: "u", Password: "p", InboxPrefix: "_INBOX_operator",
		TLS: NATSTLSConfig{CAFile: p, ServerName: "nats.internal"}})
	require.Equal(t, "sluice-svc", o.Name)
	require.Equal(t, []string{"u", "p", "_INBOX_operator"}, []string{o.User, o.Password, o.InboxPrefix})
	require.True(t, o.Secure)
	require.Equal(t, "nats.internal", o.TLSConfig.ServerName)
	require.NotNil(t, o.RootCAsCB, "the CA is used")
	require.NotNil(t, o.AsyncErrorCB)

	o = apply(NATSConfig{URL: "nats://h:4222", Token: "t0k"})
	require.Equal(t, "t0k", o.Token)
	require.False(t, o.Secure)

	o = apply(NATSConfig{User: "u", Password: "p", InboxPrefix: "_INBOX_x"})
	require.Equal(t, []string{"", "", "_INBOX_x"}, []string{o.User, o.Password, o.InboxPrefix}, "embedded: no credentials")
}

// `config print` masks the NATS password, token and URL password.
func TestConfigPrintMasksNATSSecrets(t *testing.T) {
	for _, env := range []map[string]string{
		{"SLUICE_NATS_URL": "nats://a:url-s3cret@h1:4222,nats://h2:4222", "SLUICE_NATS_USER": "sluice", "SLUICE_NATS_PASSWORD": "pw-s3cret"},
		{"SLUICE_NATS_URL": "nats://tok-s3cret@h1:4222,nats://h2:4222", "SLUICE_NATS_TOKEN": "token-s3cret"},
	} {
		cleanEnv(t)
		for k, v := range env {
			t.Setenv(k, v)
		}
		var stdout bytes.Buffer
		root := newRoot(&stdout, &bytes.Buffer{})
		root.SetArgs([]string{"config", "print"})
		require.NoError(t, root.Execute())
		out := stdout.String()
		require.NotContains(t, out, "s3cret")
		require.Contains(t, out, "h2:4222")
		require.Contains(t, out, ": <redacted>")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "",
		"nats://h:4222,nats://h2:4222":     "nats://h:4222,nats://h2:4222",
		"nats://u:pw@h:4222,tls://h2:4222": "nats://u:xxxxx@h:4222,tls://h2:4222",
		"nats://tok@h:4222":                "nats://xxxxx@h:4222",
		"nats://u:p%zz@h":                  "<redacted URL>",
	} {
		require.Equal(t, want, redactURL(in), in)
	}
}

// A failed connect names the key to check and never prints the password.
func TestConnectErrorHints(t *testing.T) {
	err := connectError("nats://u:pw@h:4222", nats.ErrAuthorization, "is `sluice run` up?")
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.Contains(t, err.Error(), "nats.user/nats.password")
	require.NotContains(t, err.Error(), "pw@")
	err = connectError("nats://h:4222", errors.New("dial tcp: refused"), "is `sluice run` up?")
	require.True(t, strings.Contains(err.Error(), "is `sluice run` up?"), err)
}

// Every connection goes through natsOptions: bus.connect (runtime.go) and
// connectCLI (status.go) are the only nats.Connect calls of the command, and
// no inbox is made without the connection's prefix (nats.NewInbox).
func TestOneConnectionBuilder(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		n := strings.Count(string(b), "nats.Connect(")
		switch f {
		case "runtime.go", "status.go":
			require.Equal(t, 1, n, f)
		default:
			require.Zero(t, n, "%s connects on its own: use connectCLI or bus.connect (credentials, TLS, inbox prefix)", f)
		}
		require.NotContains(t, string(b), "nats.NewInbox()", "%s: use nc.NewInbox() (nats.inbox_prefix)", f)
	}
}
