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

// parkedSpy is the group's JetStream, counting its lookups of the parked
// stream, whose first failDeletes deletes fail (as while the server
// restarts).
type parkedSpy struct {
	jetstream.JetStream
	parked      string
	lookups     atomic.Int32
	failDeletes atomic.Int32
}

func (j *parkedSpy) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := j.JetStream.Stream(ctx, name)
	if err != nil || name != j.parked {
		return s, err
	}
	j.lookups.Add(1)
	return &flakyDeletes{Stream: s, fail: &j.failDeletes}, nil
}

type flakyDeletes struct {
	jetstream.Stream
	fail *atomic.Int32 // deletes left to fail
}

func (s *flakyDeletes) DeleteMsg(ctx context.Context, seq uint64) error {
	if s.fail.Add(-1) >= 0 {
		return errors.New("nats: timeout")
	}
	return s.Stream.DeleteMsg(ctx, seq)
}

// A held key's rounds (read its parked messages, republish, delete each)
// look the parked stream up once per group, not once or twice per round:
// under a flaky CRM every round is a few more requests to the server.
func TestHeldRoundsLookTheParkedStreamUpOnce(t *testing.T) {
	names, js := setup(t, 1)
	ctx := context.Background()
	spy := &parkedSpy{JetStream: js, parked: names.ParkedStream()}
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
	require.LessOrEqual(t, spy.lookups.Load(), int32(1), "parked stream lookups over %d rounds", failures)
}

// A held round whose delete of a republished copy fails (the server
// restarting) still removes the copy: the round's message runs and frees
// the key before the holder would look again, and a copy left behind
// would be replayed by the key's next round, an old event after newer
// ones (the inline e2e test across a NATS restart once ended with one).
func TestHeldRoundRemovesItsCopiesWhenADeleteFailsOnce(t *testing.T) {
	names, js := setup(t, 1)
	ctx := context.Background()
	fjs := &parkedSpy{JetStream: js, parked: names.ParkedStream()}
	fjs.failDeletes.Store(2)
	var calls atomic.Int32
	g, err := lane.NewGroup(fjs, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		IsolateKeys: true, StepAside: lane.StepAside{Enabled: true, Backoff: []time.Duration{20 * time.Millisecond}},
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			if calls.Add(1) == 1 {
				return lane.Retry(time.Second, errors.New("crm answered 503")).Transient()
			}
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	publish(t, js, names, "t1", "k", 1)
	admin, err := lane.OpenParked(ctx, js, names)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := admin.Get(ctx, topology.StageEnricher, "k")
		return calls.Load() == 2 && errors.Is(err, lane.ErrNotParked)
	}, 10*time.Second, 10*time.Millisecond, "the held message should have been replayed and the key freed")
	require.Eventually(t, func() bool {
		msgs, err := admin.Messages(ctx, topology.StageEnricher, "k")
		return err == nil && len(msgs) == 0
	}, 5*time.Second, 10*time.Millisecond, "the replayed copy is still parked")
	require.LessOrEqual(t, fjs.failDeletes.Load(), int32(0), "the deletes did not fail as planned")
}
