package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// A supervised dispatcher whose NATS connection dies for good (its lanes
// can no longer consume) reports the crash, is restarted after the delay
// with a fresh connection, and delivers afterwards.
func TestSupervisedServiceRestartsAfterCrash(t *testing.T) {
	ctx := context.Background()
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(1))
	require.NoError(t, names.Ensure(ctx, js))

	var mu sync.Mutex
	var got []string
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(crm.Close)
	delivered := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	publish := func(id string) {
		now := time.Now().UTC()
		b, err := json.Marshal(crmreq.Request{EventID: id, Type: "evt", Key: "k", OccurredAt: now, AcceptedAt: now,
			Mode: "send", Method: "POST", Path: "/events", Body: json.RawMessage(`{}`)})
		require.NoError(t, err)
		m := nats.NewMsg(names.DispatchSubject(names.PartitionOf("k"), "evt", "k"))
		m.Header.Set(nats.MsgIdHdr, id)
		m.Data = b
		_, err = js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}

	const delay = 300 * time.Millisecond
	sup, cur, err := supervise(dispatcher.ServiceName, delay, zerolog.Nop(),
		func() (*nats.Conn, jetstream.JetStream, error) {
			nc, err := nats.Connect(s.ClientURL())
			if err != nil {
				return nil, nil, err
			}
			js, err := jetstream.New(nc)
			return nc, js, err
		},
		func(nc *nats.Conn, js jetstream.JetStream) (*dispatcher.Service, error) {
			return dispatcher.New(dispatcher.Config{CRM: dispatcher.CRMConfig{URL: crm.URL, Timeout: 2 * time.Second}},
				dispatcher.Deps{NC: nc, JS: js, Names: names, Logger: zerolog.Nop()})
		})
	require.NoError(t, err)
	require.NoError(t, sup.Start(ctx))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, sup.Stop(sctx))
	})
	first := cur.get()

	publish("k#1")
	require.Eventually(t, func() bool { return slices.Equal(delivered(), []string{"k#1"}) },
		10*time.Second, 10*time.Millisecond)

	// Kill the running instance: its connection closes for good.
	cur.mu.Lock()
	killed := time.Now()
	cur.nc.Close()
	cur.mu.Unlock()
	publish("k#2")
	require.Eventually(t, func() bool { return sup.Crashes() == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, sup.Restarts(), "restarted before the delay")
	require.Eventually(t, func() bool { return sup.Restarts() == 1 }, 15*time.Second, 10*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(killed), delay)
	second := cur.get()
	require.NotSame(t, first, second)

	require.Eventually(t, func() bool { return slices.Equal(delivered(), []string{"k#1", "k#2"}) },
		10*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, second.Delivered(), "the new instance delivered k#2")
	require.EqualValues(t, 1, sup.Restarts())
}
