package app

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// `sluice run` with dispatcher.inline: an event POSTed to ingest reaches
// the built-in CRM simulator through the enricher's lane (the dispatch
// stream never stores it), and /metrics counts it as delivered.
func TestRunInlineDeliversFromTheEnricher(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole mesh")
	}
	cleanEnv(t)
	dir := t.TempDir()
	ops, ingestAddr := freeAddr(t), freeAddr(t)
	natsPort := meshtest.FreePorts(t, 1)[0]
	cfgPath := filepath.Join(dir, "sluice.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(`data_dir: `+filepath.Join(dir, "data")+`
nats: {embedded: {listen: "127.0.0.1:`+strconv.Itoa(natsPort)+`"}}
demo: {enabled: "false"}
progress_interval: -1s
ops: {addr: "`+ops+`"}
ingest: {http_addr: "`+ingestAddr+`"}
simulator: {error_rate: 0}
dispatcher: {inline: true}
`), 0o600))
	c, err := LoadConfig(cfgPath, "all")
	require.NoError(t, err)
	require.True(t, c.Dispatcher.Inline)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, "all", zerolog.Nop()) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	ev := `{"id":"inline-1","type":"customer_signed_up","source":"test","occurred_at":"2026-11-25T10:00:00Z",
	  "data":{"customer_id":7,"name":"Asha Rao","email":"asha@example.com","phone":"+91 98450 00007","city":"Bengaluru"}}`
	require.Eventually(t, func() bool {
		resp, err := http.Post("http://"+ingestAddr+"/v1/events", "application/json", strings.NewReader(ev))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusAccepted
	}, 60*time.Second, 200*time.Millisecond)
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + ops + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		return bytes.Contains(text, []byte("\nsluice_dispatcher_delivered_total 1"))
	}, 60*time.Second, 200*time.Millisecond, "the event is delivered")

	nc, err := nats.Connect("nats://127.0.0.1:" + strconv.Itoa(natsPort))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), topology.New(c.Topology).DispatchStream())
	require.NoError(t, err)
	require.Zero(t, s.CachedInfo().State.LastSeq, "inline: the request must not go through the dispatch stream")
}
