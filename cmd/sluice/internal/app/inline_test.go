package app

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	c := runMesh(t, cfgPath)
	require.True(t, c.Dispatcher.Inline)
	deliverOne(t, ingestAddr, ops, "inline-1")

	nc, err := nats.Connect("nats://127.0.0.1:" + strconv.Itoa(natsPort))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), topology.New(c.Topology).DispatchStream())
	require.NoError(t, err)
	require.Zero(t, s.CachedInfo().State.LastSeq, "inline: the request must not go through the dispatch stream")
}
