package ingest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/ingest"
)

func TestConfigDefaults(t *testing.T) {
	c := ingest.DefaultConfig()
	require.Equal(t, ingest.Config{HTTPAddr: "127.0.0.1:8080", MaxBodyBytes: 1 << 20, MaxBatch: 1000,
		PublishTimeout: 5 * time.Second}, c)
	require.NoError(t, c.Validate())

	// YAML over the defaults: an explicit empty http_addr turns HTTP off.
	require.NoError(t, yaml.Unmarshal([]byte("http_addr: \"\"\npublish_timeout: 2s\n"), &c))
	c = c.WithDefaults()
	require.Empty(t, c.HTTPAddr)
	require.Equal(t, 2*time.Second, c.PublishTimeout)
	require.NoError(t, c.Validate())
}

func TestConfigValidate(t *testing.T) {
	const secret = "short-secret"
	tests := []struct {
		name string
		mod  func(*ingest.Config)
		key  string
	}{
		{"bad addr", func(c *ingest.Config) { c.HTTPAddr = "8080" }, "ingest.http_addr:"},
		{"tiny body", func(c *ingest.Config) { c.MaxBodyBytes = 10 }, "ingest.max_body_bytes:"},
		{"batch", func(c *ingest.Config) { c.MaxBatch = -1 }, "ingest.max_batch:"},
		{"timeout", func(c *ingest.Config) { c.PublishTimeout = time.Millisecond }, "ingest.publish_timeout:"},
		{"token name", func(c *ingest.Config) { c.Tokens = []ingest.Token{{Name: "a b", Token: "0123456789abcdef"}} }, "ingest.tokens[0].name:"},
		{"duplicate name", func(c *ingest.Config) {
			c.Tokens = []ingest.Token{{Name: "a", Token: "0123456789abcdef"}, {Name: "a", Token: "0123456789abcdeg"}}
		}, "ingest.tokens[1].name:"},
		{"short token", func(c *ingest.Config) { c.Tokens = []ingest.Token{{Name: "a", Token: secret}} }, "ingest.tokens[0].token:"},
		{"duplicate token", func(c *ingest.Config) {
			c.Tokens = []ingest.Token{{Name: "a", Token: "0123456789abcdef"}, {Name: "b", Token: "0123456789abcdef"}}
		}, "ingest.tokens[1].token:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ingest.DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			require.ErrorContains(t, err, tc.key)
			require.NotContains(t, err.Error(), secret, "tokens are never printed")
			require.NotContains(t, err.Error(), "0123456789abcdef")
		})
	}
}
