package app

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/config"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// opsEnv starts a server with a fresh topology (two dispatcher lanes and one
// parked event) and points the CLI's config at it.
func opsEnv(t *testing.T) (*nats.Conn, jetstream.JetStream, topology.Names) {
	t.Helper()
	cleanEnv(t)
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	tc := meshtest.Topology(2)
	names := topology.New(tc)
	ctx := context.Background()
	require.NoError(t, names.Ensure(ctx, js))
	for p := 0; p < 2; p++ {
		stream, filter := names.StageFilter(topology.StageDispatcher, p)
		_, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: names.ConsumerName(topology.StageDispatcher, p), FilterSubject: filter,
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1})
		require.NoError(t, err)
	}
	_, err := js.Publish(ctx, names.ParkedSubject(topology.StageDispatcher, "order", "k1"), []byte("{}"))
	require.NoError(t, err)
	pointCLI(t, s.ClientURL(), tc)
	return nc, js, names
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRoot(&stdout, &stderr)
	root.SetArgs(args)
	err := root.Execute()
	return stdout.String(), err
}

func TestPauseResumeRoundTrip(t *testing.T) {
	_, js, names := opsEnv(t)
	ctx := context.Background()
	stream := names.DispatchStream()
	info := func() *jetstream.ConsumerInfo {
		c, err := js.Consumer(ctx, stream, "dispatcher-001")
		require.NoError(t, err)
		return c.CachedInfo()
	}
	require.False(t, info().Paused)

	out, err := runCLI(t, "pause", "dispatcher-001", "--for", "1h")
	require.NoError(t, err)
	require.Contains(t, out, "paused dispatcher-001 until ")
	ci := info()
	require.True(t, ci.Paused)
	require.InDelta(t, time.Hour.Seconds(), ci.PauseRemaining.Seconds(), 60)

	out, err = runCLI(t, "resume", "dispatcher-001")
	require.NoError(t, err)
	require.Equal(t, "resumed dispatcher-001\n", out)
	require.False(t, info().Paused)
}

func TestPauseRejectsBadLanes(t *testing.T) {
	opsEnv(t)
	for _, lane := range []string{"dispatcher", "dispatcher-2", "dispatcher-002", "ingest-000", "x-001", "dispatcher-x"} {
		t.Run(lane, func(t *testing.T) {
			_, err := runCLI(t, "pause", lane)
			require.ErrorIs(t, err, config.ErrInvalid)
		})
	}
	_, err := runCLI(t, "pause", "dispatcher-000", "--for", "0s")
	require.ErrorIs(t, err, config.ErrInvalid)
}

func TestStatusShowsPausedLaneParkedAndServices(t *testing.T) {
	nc, js, names := opsEnv(t)
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	_, err := js.PauseConsumer(ctx, names.DispatchStream(), "dispatcher-001", until)
	require.NoError(t, err)
	svc, err := micro.AddService(nc, micro.Config{Name: "sluice-dispatcher", Version: "9.9.9",
		StatsHandler: func(*micro.Endpoint) any {
			return map[string]any{"delivered": 7, "crm_statuses": map[string]int{"200": 7, "503": 2},
				"adopted": 2, "probe_answers": 1, "throttled": 3, "rate": 40.0,
				"lanes": []map[string]any{{"consumer": "dispatcher-001", "last_error": "crm answered 503"}}}
		}})
	require.NoError(t, err)
	require.NoError(t, svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(nil) })))
	t.Cleanup(func() { _ = svc.Stop() })

	// One key held for a retry at the dispatcher (the lanes replay it by
	// themselves), one parked for the operator.
	kv, err := js.KeyValue(ctx, names.ParkedKeysBucket())
	require.NoError(t, err)
	for k, v := range map[string]string{
		topology.ParkedKeyName(topology.StageDispatcher, "k1"): `{"stage":"dispatcher","key":"k1","state":"held","held":true}`,
		topology.ParkedKeyName(topology.StageDispatcher, "k2"): `{"stage":"dispatcher","key":"k2","state":"parked"}`,
	} {
		_, err := kv.Put(ctx, k, []byte(v))
		require.NoError(t, err)
	}

	out, err := runCLI(t, "status", "--json")
	require.NoError(t, err)
	var st Status
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st.Lanes, 2) // the enricher and inbound lanes do not exist here
	require.Equal(t, "dispatcher-000", st.Lanes[0].Consumer)
	require.Nil(t, st.Lanes[0].PausedUntil)
	require.Equal(t, "dispatcher-001", st.Lanes[1].Consumer)
	require.NotNil(t, st.Lanes[1].PausedUntil)
	require.WithinDuration(t, until, *st.Lanes[1].PausedUntil, time.Second)
	require.Equal(t, "crm answered 503", st.Lanes[1].LastError, "the lane's last error from its service's STATS")
	require.Empty(t, st.Lanes[0].LastError)
	require.Equal(t, []ParkedStatus{{Stage: "dispatcher", Events: 1, Keys: 1, HeldKeys: 1}}, st.Parked)
	require.Len(t, st.Services, 1)
	require.Equal(t, ServiceStatus{Name: "sluice-dispatcher", Version: "9.9.9", ID: svc.Info().ID}, st.Services[0])
	require.Len(t, st.CRM, 1)
	require.Equal(t, map[string]uint64{"200": 7, "503": 2}, st.CRM[0].Statuses)
	require.Equal(t, [4]uint64{2, 1, 3, 0}, [4]uint64{st.CRM[0].Adopted, st.CRM[0].ProbeAnswers, st.CRM[0].Throttled, st.CRM[0].Unauthorized})

	out, err = runCLI(t, "status")
	require.NoError(t, err)
	require.Regexp(t, `dispatcher\s+1\s+dispatcher-001\s+0\s+0\s+0\s+0\s+`+clock(until), out) // the page's time format
	require.Regexp(t, `dispatcher\s+0\s+dispatcher-000\s+0\s+0\s+0\s+0\s+-`, out)
	require.Contains(t, out, "sluice-dispatcher")
	require.Contains(t, out, "200=7 503=2")
	require.Contains(t, out, "adopted=2 probe_answers=1 429s=3 rate=40/s")
	require.Regexp(t, `HELD KEYS \(RETRYING BY THEMSELVES\)\n\s*dispatcher\s+1\s+1\s+1\n`, out)
}

func TestStatusWithoutServer(t *testing.T) {
	cleanEnv(t)
	t.Setenv("SLUICE_NATS_URL", "nats://127.0.0.1:1")
	_, err := runCLI(t, "status")
	require.ErrorContains(t, err, "connect to NATS at nats://127.0.0.1:1")
}

func TestStatusWarnsWhenTheConfigsPartitionCountIsNotTheStreams(t *testing.T) {
	_, _, names := opsEnv(t)
	out, err := runCLI(t, "status")
	require.NoError(t, err)
	require.NotContains(t, out, "WARNING", "config and streams agree")

	t.Setenv("SLUICE_TOPOLOGY_PARTITIONS", "5")
	out, err = runCLI(t, "status")
	require.NoError(t, err)
	require.Contains(t, out, "WARNING: stream "+names.EventsStream()+" has 2 partitions, this config says 5")
}
