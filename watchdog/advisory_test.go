package watchdog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// nats-server v2.15.2 accepts advisory subjects as stream subjects.
func TestAdvisorySubjectsAreValidStreamSubjects(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ADV", Subjects: []string{
		"$JS.EVENT.ADVISORY.CONSUMER.PAUSE.*.*", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.*",
	}})
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream(ctx, "ADV"), "its wildcards would overlap the topology's advisories stream")
	names := topology.New(meshtest.Topology(2))
	require.NoError(t, names.Ensure(ctx, js))
	require.NoError(t, names.EnsureWatchdog(ctx, js))
	require.NoError(t, names.EnsureWatchdog(ctx, js), "idempotent")
	// A second topology in the same account does not overlap.
	other := topology.New(meshtest.Topology(2))
	require.NoError(t, other.Ensure(ctx, js))
	require.NoError(t, other.EnsureWatchdog(ctx, js))
}

// Advisories of the Sluice streams land in the advisories stream, also
// while no watchdog runs, and the watchdog consumes them.
func TestAdvisoriesAreCaptured(t *testing.T) {
	e := newEnv(t, 2, 5*time.Second)
	ctx := context.Background()
	require.NoError(t, e.names.EnsureWatchdog(ctx, e.js))
	e.laneConsumer(t, 0, 0)
	consumer := e.names.ConsumerName(topology.StageDispatcher, 0)
	stream := e.names.DispatchStream()
	_, err := e.js.PauseConsumer(ctx, stream, consumer, time.Now().Add(time.Minute))
	require.NoError(t, err)

	adv, err := e.js.Stream(ctx, e.names.AdvisoriesStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := adv.GetLastMsgForSubject(ctx, "$JS.EVENT.ADVISORY.CONSUMER.PAUSE."+stream+"."+consumer)
		if err != nil {
			return false
		}
		a, err := watchdog.DecodeAdvisory(m.Data)
		return err == nil && a.Kind == "consumer_pause" && a.Paused && a.Consumer == consumer
	}, 5*time.Second, 20*time.Millisecond, "pause advisory not captured")

	w := e.start(t, e.fastConfig(), watchdog.Deps{})
	_, err = e.js.ResumeConsumer(ctx, stream, consumer)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.Stats().Advisories["consumer_pause"] >= 1 }, 5*time.Second, 20*time.Millisecond)
}

func TestDecodeAdvisory(t *testing.T) {
	for _, tc := range []struct {
		name, body, kind string
		ok               bool
	}{
		{"max deliver", `{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"S","consumer":"C","stream_seq":7,"deliveries":3}`, "max_deliver", true},
		{"unknown fields", `{"type":"io.nats.jetstream.advisory.v1.stream_leader_elected","leader":"n1","replicas":[]}`, "stream_leader_elected", true},
		{"not an advisory", `{"type":"io.nats.server.advisory.v1.client_connect"}`, "", false},
		{"no kind", `{"type":"io.nats.jetstream.advisory.v1."}`, "", false},
		{"bad json", `{"type":`, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := watchdog.DecodeAdvisory([]byte(tc.body))
			if !tc.ok {
				require.ErrorIs(t, err, watchdog.ErrBadAdvisory)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.kind, a.Kind)
		})
	}
}

func FuzzDecodeAdvisory(f *testing.F) {
	for _, s := range []string{
		`{"type":"io.nats.jetstream.advisory.v1.consumer_pause","stream":"S","consumer":"C","paused":true,"pause_until":"2026-01-01T00:00:00Z"}`,
		`{"type":"io.nats.jetstream.advisory.v1.terminated","reason":"x"}`,
		`{"type":"io.nats.jetstream.advisory.v1.server_out_of_space","server":"n1"}`,
		`{"type":"io.nats.jetstream.advisory.v1.nak","stream_seq":-1}`,
		`{"type":"io.nats.jetstream.advisory.x"}`, `null`, `[]`, ``, `{"timestamp":"nope"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := watchdog.DecodeAdvisory(b)
		if err != nil {
			if !errors.Is(err, watchdog.ErrBadAdvisory) {
				t.Fatalf("error does not wrap ErrBadAdvisory: %v", err)
			}
			return
		}
		if a.Kind == "" {
			t.Fatalf("accepted an advisory without a kind: %q", b)
		}
	})
}
