package app

import (
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/ingest"
	"sluice.dev/mesh/topology"
)

// TestDemoSendersUseTheirOwnTokens: with ingest.tokens set, the demo
// producer and the demo import send with the token of their own name (the
// source ingest enforces for it), or publish to JetStream directly when
// there is none, instead of being refused with 401 for ever.
func TestDemoSendersUseTheirOwnTokens(t *testing.T) {
	const u = "http://127.0.0.1:8080"
	demoTok := ingest.Token{Name: "demo", Token: "demo-secret-0123456789"}
	other := ingest.Token{Name: "website", Token: "website-secret-0123456789"}
	for _, tc := range []struct {
		name      string
		url       string
		tokens    []ingest.Token
		source    string
		wantURL   string
		wantToken string
	}{
		{"ingest not in this process", "", []ingest.Token{demoTok}, demoSource, "", ""},
		{"no tokens required", u, nil, demoSource, u, ""},
		{"its own token", u, []ingest.Token{other, demoTok}, demoSource, u, demoTok.Token},
		{"no token of its name: JetStream", u, []ingest.Token{other}, demoSource, "", ""},
		{"the import has no token of its name", u, []ingest.Token{demoTok}, demoImportSource, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDemo(DemoConfig{}, nil, topology.Names{}, func() string { return tc.url }, tc.tokens, zerolog.Nop())
			gotURL, gotToken := d.ingestFor(tc.source)
			require.Equal(t, tc.wantURL, gotURL)
			require.Equal(t, tc.wantToken, gotToken)
		})
	}
}
