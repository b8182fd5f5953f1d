package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/watchdog"
)

// freeAddr is a loopback address for a server `sluice run` starts later:
// a port reserved below the ephemeral range (meshtest.FreePorts), not one
// picked with :0 and closed, which a client connection's local port or
// another test binary could take before the server binds it.
func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", meshtest.FreePorts(t, 1)[0])
}

// From an empty directory to events of a new type delivered: sluice init,
// config check (its mapping test passes), sluice try, sluice run, one
// event of the new type POSTed to ingest reaches the CRM simulator; the
// status page's history shows it delivered.
func TestInitFromEmptyDirectoryToDelivered(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole mesh")
	}
	cleanEnv(t)
	dir := filepath.Join(t.TempDir(), "mycrm")
	cli := func(args ...string) (string, error) {
		var out bytes.Buffer
		root := newRoot(&out, &out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	out, err := cli("init", dir)
	require.NoError(t, err, out)
	require.Contains(t, out, "sluice run --config "+filepath.Join(dir, "sluice.yaml"))
	_, err = cli("init", dir)
	require.ErrorContains(t, err, "never overwrites", "a second init keeps the user's files")

	cfg := filepath.Join(dir, "sluice.yaml")
	out, err = cli("config", "check", "--config", cfg)
	require.NoError(t, err, out)
	require.Contains(t, out, "mapping tests: 1 passed, 0 failed")

	out, err = cli("try", "--config", cfg, filepath.Join(dir, "events", "ticket_opened.json"))
	require.NoError(t, err, out)
	require.Contains(t, out, "/api/tickets\n")
	require.Contains(t, out, "Idempotency-Key: ticket-1-opened")
	require.Contains(t, out, `"customer_name": "Aarav Menon"`)

	t.Setenv("SLUICE_LEDGER_SENSITIVE_FIELDS", "customer_name")
	out, err = cli("try", "--config", cfg, filepath.Join(dir, "events", "ticket_opened.json"))
	require.NoError(t, err, out)
	require.Contains(t, out, `"customer_name": "[redacted]"`, "ledger.sensitive_fields are not shown")
	require.NotContains(t, out, "Aarav")
	os.Unsetenv("SLUICE_LEDGER_SENSITIVE_FIELDS")

	sim, ingestAddr, ops := freeAddr(t), freeAddr(t), freeAddr(t)
	for k, v := range map[string]string{
		"SLUICE_NATS_EMBEDDED_LISTEN": "127.0.0.1:-1", "SLUICE_SIMULATOR_ADDR": sim, "SLUICE_SIMULATOR_ERROR_RATE": "0",
		"SLUICE_INGEST_HTTP_ADDR": ingestAddr, "SLUICE_OPS_ADDR": ops, "SLUICE_DEMO_ENABLED": "false",
		"SLUICE_PROGRESS_INTERVAL": "-1s", "SLUICE_WATCHDOG_POLL_INTERVAL": "500ms",
	} {
		t.Setenv(k, v)
	}
	c, err := LoadConfig(cfg, "all")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, "all", zerolog.Nop()) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	ev, err := os.ReadFile(filepath.Join(dir, "events", "ticket_opened.json"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		resp, err := http.Post("http://"+ingestAddr+"/v1/events", "application/json", bytes.NewReader(ev))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusAccepted
	}, 60*time.Second, 200*time.Millisecond, "ingest accepts the new type")
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + sim + "/_sim/records")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body) // NDJSON
		for {
			var r struct {
				Path    string `json:"path"`
				Type    string `json:"type"`
				EventID string `json:"event_id"`
				Status  int    `json:"status"`
			}
			if dec.Decode(&r) != nil {
				return false
			}
			if r.Path == "/api/tickets" && r.Type == "ticket_opened" && r.EventID == "ticket-1-opened" && r.Status/100 == 2 {
				return true
			}
		}
	}, 60*time.Second, 200*time.Millisecond, "the CRM simulator got the ticket")
	// The rate shows deliveries between two of the watchdog's polls: keep
	// sending tickets until one falls between two.
	n := 1
	require.Eventually(t, func() bool {
		n++
		more := fmt.Sprintf(`{"id":"ticket-%d-opened","type":"ticket_opened","occurred_at":"2026-12-01T10:00:00Z","data":{"ticket_id":%d,"subject":"s"}}`, n, n)
		if resp, err := http.Post("http://"+ingestAddr+"/v1/events", "application/json", strings.NewReader(more)); err == nil {
			resp.Body.Close()
		}
		resp, err := http.Get("http://" + ops + "/api/history")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h watchdog.History
		if json.NewDecoder(resp.Body).Decode(&h) != nil {
			return false
		}
		for _, p := range h.Points {
			if p.DeliveredPerSec != nil && *p.DeliveredPerSec > 0 {
				return true
			}
		}
		return false
	}, 30*time.Second, 250*time.Millisecond, "the status page's history shows the delivery")
}
