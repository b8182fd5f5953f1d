package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/ingest/client"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

type jsHarness struct {
	srv   *server.Server
	dir   string
	js    jetstream.JetStream
	names topology.Names
}

func setupJS(t testing.TB) *jsHarness {
	t.Helper()
	dir := t.TempDir()
	s := meshtest.RunServer(t, dir)
	// The client's connection must reconnect forever to survive restarts.
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	require.NoError(t, err)
	names := topology.New(meshtest.Topology(4))
	require.NoError(t, names.Ensure(context.Background(), js))
	return &jsHarness{srv: s, dir: dir, js: js, names: names}
}

// countingTransport counts failed sends.
type countingTransport struct {
	client.Transport
	failures atomic.Int64
}

func (c *countingTransport) Send(ctx context.Context, evs []*envelope.Envelope) ([]client.Result, error) {
	rs, err := c.Transport.Send(ctx, evs)
	if err != nil {
		c.failures.Add(1)
	}
	return rs, err
}

type stored struct {
	subject string
	env     *envelope.Envelope
}

// readAll returns every message of the events stream, in stream order.
func (h *jsHarness) readAll(t *testing.T) []stored {
	t.Helper()
	ctx := context.Background()
	st, err := h.js.Stream(ctx, h.names.EventsStream())
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		env, err := envelope.Decode(m.Data)
		require.NoError(t, err)
		out = append(out, stored{subject: m.Subject, env: env})
	}
	return out
}

type seqData struct {
	G int `json:"g"`
	N int `json:"n"`
}

// TestPerKeyOrderAcrossRestart is the acceptance: 50 goroutines over
// 20 keys, the server restarted once mid-run; every event is stored exactly
// once and each goroutine's events of a key are stored in call order.
func TestPerKeyOrderAcrossRestart(t *testing.T) {
	h := setupJS(t)
	tr := &countingTransport{Transport: client.NewJetStream(h.js, h.names)}
	c, err := client.New(client.Config{Source: "test", AttemptTimeout: 300 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, tr)
	require.NoError(t, err)

	const goroutines, keys, each = 50, 20, 60
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var done, retried atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for n := range each {
				key := fmt.Sprintf("acct %d.x", (g+n)%keys) // escaped in the subject
				data, _ := json.Marshal(seqData{G: g, N: n})
				r, err := c.Publish(ctx, &envelope.Envelope{Type: "order", Key: key, Data: data})
				if err != nil {
					errs <- fmt.Errorf("g%d n%d: %w", g, n, err)
					return
				}
				if r.Attempts > 1 {
					retried.Add(1)
				}
				done.Add(1)
			}
		})
	}
	require.Eventually(t, func() bool { return done.Load() >= goroutines*each/3 }, 30*time.Second, time.Millisecond)
	port := h.srv.Addr().(*net.TCPAddr).Port
	h.srv.Shutdown()
	h.srv.WaitForShutdown()
	atRestart := done.Load()
	// Keep the server down until publishes have failed and are being retried.
	require.Eventually(t, func() bool { return tr.failures.Load() >= 10 }, 10*time.Second, time.Millisecond)
	h.srv = meshtest.RunServerOn(t, h.dir, port)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int64(goroutines*each), done.Load())
	require.Less(t, atRestart, int64(goroutines*each), "the restart happened mid-run")
	require.Positive(t, retried.Load())
	t.Logf("%d events, %d before the restart, %d needed a retry", done.Load(), atRestart, retried.Load())
	require.Zero(t, client.LockedKeys(c), "key locks are cleaned up")

	msgs := h.readAll(t)
	require.Len(t, msgs, goroutines*each, "every event stored exactly once")
	last := map[[2]string]int{} // (key, goroutine) -> last n stored + 1
	ids := map[string]bool{}
	for _, m := range msgs {
		require.False(t, ids[m.env.ID], "id %s stored twice", m.env.ID)
		ids[m.env.ID] = true
		_, typ, tok, err := h.names.SubjectParts(m.subject)
		require.NoError(t, err)
		require.Equal(t, "order", typ)
		require.Equal(t, topology.KeyToken(m.env.Key), tok)
		var d seqData
		require.NoError(t, json.Unmarshal(m.env.Data, &d))
		k := [2]string{m.env.Key, fmt.Sprint(d.G)}
		require.Greater(t, d.N+1, last[k], "event %d of goroutine %d stored after a later one of key %q", d.N, d.G, m.env.Key)
		last[k] = d.N + 1
	}
}

func TestPublishBatchJetStream(t *testing.T) {
	h := setupJS(t)
	c, err := client.New(client.Config{}, client.NewJetStream(h.js, h.names))
	require.NoError(t, err)
	batch := []*envelope.Envelope{ev("a"), ev("b"), ev("a"), ev("a"), ev("c.d")}
	rs, err := c.PublishBatch(context.Background(), batch)
	require.NoError(t, err)
	require.Len(t, rs, len(batch))
	require.Less(t, rs[0].StreamSeq, rs[2].StreamSeq)
	require.Less(t, rs[2].StreamSeq, rs[3].StreamSeq)
	again, err := c.PublishBatch(context.Background(), batch) // same ids: duplicates
	require.NoError(t, err)
	for i := range again {
		require.True(t, again[i].Duplicate)
		require.Equal(t, rs[i].StreamSeq, again[i].StreamSeq)
	}
	msgs := h.readAll(t)
	require.Len(t, msgs, len(batch))
	var keys []string
	for _, m := range msgs {
		keys = append(keys, m.env.Key)
	}
	require.Equal(t, []string{"a", "b", "c.d", "a", "a"}, keys, "waves: the i-th event of each key, then the next")
}
