package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// dashboardMetrics returns the metric names deploy/grafana/sluice.json
// queries (histogram series reduced to the histogram's name).
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "sluice.json"))
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &d))
	require.NotEmpty(t, d.Panels)
	names := map[string]bool{}
	re := regexp.MustCompile(`\bsluice_[a-z0-9_]+`)
	for _, p := range d.Panels {
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			for _, m := range re.FindAllString(tg.Expr, -1) {
				names[strings.TrimSuffix(m, "_bucket")] = true
			}
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Every metric the Grafana dashboard queries is documented in
// docs/metrics.md and served by a live /metrics of a running mesh (after
// one event went through).
func TestGrafanaDashboardQueriesLiveDocumentedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole mesh")
	}
	names := dashboardMetrics(t)
	require.Contains(t, names, "sluice_lane_lag")
	docs, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	require.NoError(t, err)
	for _, n := range names {
		require.Contains(t, string(docs), "`"+n+"`", "%s is not in docs/metrics.md", n)
	}

	cleanEnv(t)
	dir := t.TempDir()
	ops, ingestAddr := freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(`data_dir: `+filepath.Join(dir, "data")+`
nats: {embedded: {listen: "127.0.0.1:-1"}}
demo: {enabled: "false"}
progress_interval: -1s
ops: {addr: "`+ops+`"}
ingest: {http_addr: "`+ingestAddr+`"}
simulator: {error_rate: 0}
inbound:
  http_addr: "127.0.0.1:0"
  sources: [{name: crm, secrets: ["`+DemoWebhookSecret+`"]}]
`), 0o600))
	runMesh(t, cfgPath)
	text := deliverOne(t, ingestAddr, ops, "dash-1")
	for _, n := range names {
		require.Regexp(t, `(?m)^`+n+`(_bucket)?[{ ]`, string(text), "%s is not in a live /metrics", n)
	}
}

// runMesh runs `sluice run` (target all) with the config at cfgPath until
// the test ends, and returns the loaded config.
func runMesh(t *testing.T, cfgPath string) Config {
	t.Helper()
	c, err := LoadConfig(cfgPath, "all")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, "all", zerolog.Nop()) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return c
}

// deliverOne POSTs one event with id to ingest until it is accepted, waits
// until /metrics on ops counts it delivered, and returns that /metrics.
func deliverOne(t *testing.T, ingestAddr, ops, id string) []byte {
	t.Helper()
	ev := `{"id":"` + id + `","type":"customer_signed_up","source":"test","occurred_at":"2026-11-25T10:00:00Z",
	  "data":{"customer_id":7,"name":"Asha Rao","email":"asha@example.com","phone":"+91 98450 00007","city":"Bengaluru"}}`
	require.Eventually(t, func() bool {
		resp, err := http.Post("http://"+ingestAddr+"/v1/events", "application/json", strings.NewReader(ev))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusAccepted
	}, 60*time.Second, 200*time.Millisecond)
	var text []byte
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + ops + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		text, _ = io.ReadAll(resp.Body)
		return bytes.Contains(text, []byte("\nsluice_dispatcher_delivered_total 1"))
	}, 60*time.Second, 200*time.Millisecond, "the event is delivered")
	return text
}
