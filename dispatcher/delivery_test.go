package dispatcher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// requireKeyOrder checks that, per key, the attempted seqs never go back
// (a failed event is retried before the next one of its key) and that the
// delivered (2xx) seqs are exactly 0..n-1 once each.
func requireKeyOrder(t *testing.T, calls []call, delivered func(call) bool, keys []string, n int) {
	t.Helper()
	attempted := map[string][]int{}
	got := map[string][]int{}
	for _, c := range calls {
		k, seq := seqOf(t, c.Body)
		if a := attempted[k]; len(a) > 0 {
			require.GreaterOrEqual(t, seq, a[len(a)-1], "key %s went back", k)
		}
		attempted[k] = append(attempted[k], seq)
		if delivered(c) {
			got[k] = append(got[k], seq)
		}
	}
	for _, k := range keys {
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		require.Equal(t, want, got[k], "key %s", k)
	}
}

func TestDeliversInOrderPerKeyAcrossPartitions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	crm := newFakeCRM(t, ok200)
	keys := []string{"a", "b.c", "customer:1", "d e", "ü*>", "f", "g~h", "lead:42"}
	const n = 20
	svc := e.start(t, fast(crm.srv.URL+"/api/"), zerolog.Nop())
	for i := 0; i < n; i++ {
		for _, k := range keys {
			e.publish(t, request(k, i))
		}
	}
	require.Eventually(t, func() bool { return svc.Delivered() == uint64(n*len(keys)) }, 20*time.Second, 20*time.Millisecond)
	calls := crm.Calls()
	require.Len(t, calls, n*len(keys))
	requireKeyOrder(t, calls, func(call) bool { return true }, keys, n)
	partitions := map[int]bool{}
	for _, c := range calls {
		k, seq := seqOf(t, c.Body)
		partitions[e.names.PartitionOf(k)] = true
		id := fmt.Sprintf("%s#%d", topology.KeyToken(k), seq)
		require.Equal(t, "POST", c.Method)
		require.Equal(t, "/api/events", c.URI)
		require.Equal(t, id, c.Header.Get("Idempotency-Key"))
		require.Equal(t, id, c.Header.Get("X-Sluice-Event-Id"))
		require.Equal(t, k, c.Header.Get("X-Sluice-Key"))
		require.Equal(t, "evt", c.Header.Get("X-Sluice-Type"))
		require.Equal(t, "application/json", c.Header.Get("Content-Type"))
		require.Equal(t, "sluice/0.1", c.Header.Get("User-Agent"))
		_, err := time.Parse(time.RFC3339Nano, c.Header.Get("X-Sluice-Occurred-At"))
		require.NoError(t, err)
	}
	require.Greater(t, len(partitions), 1, "keys should spread over partitions")
	require.Eventually(t, func() bool { return e.dispatchLeft(t) == 0 }, 5*time.Second, 20*time.Millisecond)

	// The status endpoint and the micro STATS verb report progress.
	msg, err := e.nc.Request(svc.StatusSubject(), nil, 2*time.Second)
	require.NoError(t, err)
	var st dispatcher.Stats
	require.NoError(t, json.Unmarshal(msg.Data, &st))
	require.Equal(t, uint64(n*len(keys)), st.Delivered)
	require.Equal(t, uint64(n*len(keys)), st.CRMStatuses["200"])
	require.Len(t, st.Lanes, 4)
	require.Equal(t, n*len(keys), st.Latency.Samples)
	require.Positive(t, st.Latency.P99)
	subj, err := micro.ControlSubject(micro.StatsVerb, dispatcher.ServiceName, "")
	require.NoError(t, err)
	msg, err = e.nc.Request(subj, nil, 2*time.Second)
	require.NoError(t, err)
	var ms micro.Stats
	require.NoError(t, json.Unmarshal(msg.Data, &ms))
	require.Len(t, ms.Endpoints, 1)
	require.NoError(t, json.Unmarshal(ms.Endpoints[0].Data, &st))
	require.Equal(t, uint64(n*len(keys)), st.Delivered)
}

func TestIntermittent5xxDeliveredInOrderWithoutLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	// failing is the status of the n-th try (from 0) of event seq, 0 for success.
	failing := func(seq, n int) int {
		switch {
		case seq%5 == 2 && n < 4: // four failures: one pause with tries=3
			return 500
		case seq%3 == 1 && n < 2:
			return 503
		}
		return 0
	}
	crm := newFakeCRM(t, func(c call, n int) reply {
		_, seq := seqOf(t, c.Body)
		if st := failing(seq, n); st != 0 {
			return reply{Status: st}
		}
		return reply{Status: 200}
	})
	keys := []string{"k1", "k2", "k3", "k4", "k5"}
	const n = 12
	svc := e.start(t, fast(crm.srv.URL), zerolog.Nop())
	for i := 0; i < n; i++ {
		for _, k := range keys {
			e.publish(t, request(k, i))
		}
	}
	require.Eventually(t, func() bool { return svc.Delivered() == uint64(n*len(keys)) }, 30*time.Second, 20*time.Millisecond)
	calls := crm.Calls()
	tries := map[string]int{}
	requireKeyOrder(t, calls, func(c call) bool {
		id := c.Header.Get("Idempotency-Key")
		tries[id]++
		_, seq := seqOf(t, c.Body)
		return failing(seq, tries[id]-1) == 0
	}, keys, n)
	st := svc.Stats()
	require.Positive(t, st.CRMStatuses["503"])
	require.Positive(t, st.CRMStatuses["500"])
	var pauses uint64
	for _, l := range st.Lanes {
		pauses += l.Pauses
	}
	require.Positive(t, pauses, "four failures in a row must pause with tries=3")
}

// TestAcceptanceDefaultPolicyPausesAfterThreeTries is the acceptance test of
// the default policy: 3 tries within 6s, then the partition's consumer is
// paused on the server for 10s, then the message is redelivered and
// delivered.
func TestAcceptanceDefaultPolicyPausesAfterThreeTries(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes about 15s")
	}
	e := newEnv(t, 1)
	crm := newFakeCRM(t, func(c call, n int) reply {
		if n < 3 {
			return reply{Status: 503, Body: "down"}
		}
		return reply{Status: 200}
	})
	logs := &meshtest.LogBuffer{}
	svc := e.start(t, dispatcher.Config{CRM: dispatcher.CRMConfig{URL: crm.srv.URL}}, zerolog.New(logs))
	r := request("k", 0)
	e.publish(t, r)

	var pausedAt time.Time
	require.Eventually(t, func() bool {
		if e.paused(t, 0) {
			pausedAt = time.Now()
			return true
		}
		return false
	}, 12*time.Second, 10*time.Millisecond)
	calls := crm.Calls()
	require.Len(t, calls, 3, "paused after the 3rd try")
	span := calls[2].At.Sub(calls[0].At)
	require.LessOrEqual(t, span, 6*time.Second, "3 tries within 6s")
	require.GreaterOrEqual(t, span, 3900*time.Millisecond, "2s between tries")
	require.Less(t, pausedAt.Sub(calls[2].At), 2*time.Second)
	require.Zero(t, svc.Delivered())
	require.Contains(t, logs.String(), "the lane pauses the partition or steps the key aside")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"message":"lane paused"`) },
		5*time.Second, 10*time.Millisecond, "the lane logs the real pause (a warning)")
	require.Contains(t, logs.String(), `"attempt":3`)
	require.Contains(t, logs.String(), `"event_id":"k#0"`)

	// The alert for the watchdog (published just after the pause lands).
	as, err := e.js.Stream(context.Background(), e.names.AlertsStream())
	require.NoError(t, err)
	var am *jetstream.RawStreamMsg
	require.Eventually(t, func() bool {
		am, err = as.GetLastMsgForSubject(context.Background(), e.names.AlertSubject("lane_paused"))
		return err == nil
	}, 5*time.Second, 10*time.Millisecond, "lane_paused alert")
	var alert lane.Alert
	require.NoError(t, json.Unmarshal(am.Data, &alert))
	require.Equal(t, "crm answered 503", alert.Reason)
	require.WithinDuration(t, calls[2].At.Add(10*time.Second), alert.Until, time.Second)

	require.Eventually(t, func() bool { return svc.Delivered() == 1 }, 25*time.Second, 50*time.Millisecond)
	calls = crm.Calls()
	require.Len(t, calls, 4)
	require.GreaterOrEqual(t, calls[3].At.Sub(calls[2].At), 9500*time.Millisecond, "held for the pause")
	require.Equal(t, r.EventID, calls[3].Header.Get("Idempotency-Key"))
	require.False(t, e.paused(t, 0))
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	crm := newFakeCRM(t, func(c call, n int) reply {
		_, seq := seqOf(t, c.Body)
		switch {
		case seq == 0 && n == 0:
			return reply{Status: 429, Header: map[string]string{"Retry-After": "1"}}
		case seq == 1 && n == 0: // on a pause, a longer Retry-After wins too
			return reply{Status: 503, Header: map[string]string{"Retry-After": "1"}}
		}
		return reply{Status: 200}
	})
	cfg := fast(crm.srv.URL)
	svc := e.start(t, cfg, zerolog.Nop())
	e.publish(t, request("k", 0))
	require.Eventually(t, func() bool { return svc.Delivered() == 1 }, 10*time.Second, 10*time.Millisecond)
	calls := crm.Calls()
	require.Len(t, calls, 2)
	require.GreaterOrEqual(t, calls[1].At.Sub(calls[0].At), 950*time.Millisecond)

	// With tries=1 every failure pauses: pause 300ms < Retry-After 1s.
	require.NoError(t, svc.Stop(context.Background()))
	cfg.Retry.Tries = 1
	svc = e.start(t, cfg, zerolog.Nop())
	e.publish(t, request("k", 1))
	require.Eventually(t, func() bool { return svc.Delivered() == 1 }, 10*time.Second, 10*time.Millisecond)
	calls = crm.Calls()
	require.Len(t, calls, 4)
	require.GreaterOrEqual(t, calls[3].At.Sub(calls[2].At), 950*time.Millisecond)
	require.Equal(t, uint64(1), svc.Stats().Lanes[0].Pauses)
}

func TestConnectionRefusedHoldsThenRecovers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	// Reserved below the ephemeral range: a port picked with :0 and closed
	// could become the local port of the dispatcher's own dials to it (a
	// TCP self-connect) or another test's before it is bound again below.
	addr := fmt.Sprintf("127.0.0.1:%d", meshtest.FreePorts(t, 1)[0])

	cfg := fast("http://" + addr)
	cfg.Retry.Tries = 2
	svc := e.start(t, cfg, zerolog.Nop())
	for i := 0; i < 3; i++ {
		e.publish(t, request("k", i))
	}
	require.Eventually(t, func() bool {
		st := svc.Stats()
		return st.CRMStatuses["error"] >= 3 && st.Lanes[0].Pauses >= 1
	}, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, svc.Delivered())
	require.Contains(t, svc.Stats().Lanes[0].LastError, "crm unreachable")

	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	crm := &fakeCRM{tries: map[string]int{}, answer: ok200}
	crm.srv = httptest.NewUnstartedServer(http.HandlerFunc(crm.serve))
	crm.srv.Listener = ln
	crm.srv.Start()
	t.Cleanup(crm.srv.Close)

	require.Eventually(t, func() bool { return svc.Delivered() == 3 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"k#0", "k#1", "k#2"}, ids(crm.Calls()))
}
