package ingest

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"
)

// Config configures the ingest service (YAML under "ingest.").
type Config struct {
	// HTTPAddr is the host:port of the HTTP front door; port 0 picks a free
	// one (see Service.Addr). "" disables HTTP (the NATS micro endpoints
	// still run). Default "127.0.0.1:8080" (DefaultConfig; WithDefaults
	// leaves it alone because "" is meaningful).
	HTTPAddr string `yaml:"http_addr"`
	// MaxBodyBytes is the largest request body accepted, HTTP or NATS;
	// larger ones get 413. Default 1048576 (1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxBatch is the most events one request may carry; more get 413.
	// Default 1000.
	MaxBatch int `yaml:"max_batch"`
	// PublishTimeout is how long a request waits, in total, for JetStream to
	// ack its events. When it passes the request gets 503 (Retry-After: 1)
	// and the producer retries the whole batch with the same ids. Default 5s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// Tokens are the bearer tokens HTTP producers must send
	// ("Authorization: Bearer <token>"). Empty: no authentication (bind
	// http_addr to loopback then). A token's name is logged and is the
	// only source its events may carry: set when absent, any other source
	// is refused (403); the token is never logged.
	Tokens []Token `yaml:"tokens"`
}

// Token is one producer's credential.
type Token struct {
	// Name identifies the producer in logs and as the default event source:
	// 1-64 characters of A-Z a-z 0-9 . _ -.
	Name string `yaml:"name"`
	// Token is the secret, at least 16 characters.
	Token string `yaml:"token"`
}

// Defaults.
const (
	DefaultHTTPAddr       = "127.0.0.1:8080"
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxBatch       = 1000
	DefaultPublishTimeout = 5 * time.Second
	// MinTokenLen is the shortest bearer token accepted in the config.
	MinTokenLen = 16
)

// DefaultConfig returns the config with every default set, HTTPAddr
// included. Load YAML over it so that `http_addr: ""` disables HTTP.
func DefaultConfig() Config {
	return Config{HTTPAddr: DefaultHTTPAddr}.WithDefaults()
}

// WithDefaults returns c with zero limits set to their defaults. HTTPAddr is
// not touched: "" means HTTP is off.
func (c Config) WithDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	return c
}

var tokenNameRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Validate reports every invalid field, named by its config key. It never
// prints a token.
func (c Config) Validate() error {
	var errs []error
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("ingest.http_addr: %q is not host:port: %w", c.HTTPAddr, err))
		}
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("ingest.max_body_bytes: %d must be at least 1024", c.MaxBodyBytes))
	}
	if c.MaxBatch < 1 || c.MaxBatch > 100000 {
		errs = append(errs, fmt.Errorf("ingest.max_batch: %d is out of range 1..100000", c.MaxBatch))
	}
	if c.PublishTimeout < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("ingest.publish_timeout: %s must be at least 10ms", c.PublishTimeout))
	}
	names := map[string]bool{}
	secrets := map[string]bool{}
	for i, t := range c.Tokens {
		k := fmt.Sprintf("ingest.tokens[%d]", i)
		switch {
		case !tokenNameRe.MatchString(t.Name):
			errs = append(errs, fmt.Errorf("%s.name: %q must be 1-64 characters of A-Z a-z 0-9 . _ -", k, t.Name))
		case names[t.Name]:
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", k, t.Name))
		}
		names[t.Name] = true
		switch {
		case len(t.Token) < MinTokenLen:
			errs = append(errs, fmt.Errorf("%s.token: must be at least %d characters", k, MinTokenLen))
		case secrets[t.Token]:
			errs = append(errs, fmt.Errorf("%s.token: the same token is configured twice", k))
		}
		secrets[t.Token] = true
	}
	return errors.Join(errs...)
}
