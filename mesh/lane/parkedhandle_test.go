package lane_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// streamLookups counts the group's lookups of one stream.
type streamLookups struct {
	jetstream.JetStream
	name string
	n    atomic.Int32
}

func (j *streamLookups) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if name == j.name {
		j.n.Add(1)
	}
	return j.JetStream.Stream(ctx, name)
}

// A held key's rounds (read its parked messages, republish, delete each)
// look the parked stream up once per group, not once or twice per round:
// under a flaky CRM every round is a few more requests to the server.
func TestHeldRoundsLookTheParkedStreamUpOnce(t *testing.T) {
	names, js := setup(t, 1)
	ctx := context.Background()
	spy := &streamLookups{JetStream: js, name: names.ParkedStream()}
	const failures = 3
	var calls atomic.Int32
	var once sync.Once
	done := make(chan struct{})
	g, err := lane.NewGroup(spy, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		IsolateKeys: true, StepAside: lane.StepAside{Enabled: true, CircuitFailures: 100,
			Backoff: []time.Duration{20 * time.Millisecond}},
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			if calls.Add(1) <= failures {
				return lane.Retry(time.Second, errors.New("crm answered 503")).Transient()
			}
			once.Do(func() { close(done) })
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	publish(t, js, names, "t1", "k", 1)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the held message was not replayed to success")
	}
	require.Equal(t, uint64(failures), g.Stats()[0].Held, "each failure should have held the key")
	require.LessOrEqual(t, spy.n.Load(), int32(1), "parked stream lookups over %d rounds", failures)
}
