package lane_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// lossyPark stores the first parked copy it is given and reports the
// publish as failed, as when the connection drops before the ack arrives.
type lossyPark struct {
	jetstream.JetStream
	names topology.Names
	lost  atomic.Bool
}

func (j *lossyPark) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && m.Subject == j.names.ParkedSubject(topology.StageEnricher, "t1", "k") && j.lost.CompareAndSwap(false, true) {
		return nil, errors.New("connection lost before the ack")
	}
	return ack, err
}

// TestRedeliveredMessageRemovesItsStaleCopies: parked copies of a message
// whose park was never recorded (the parked stream stored the copy, and
// the lane lost its connection before the ack) are removed once the
// message, delivered again, succeeds; otherwise the next hold or park of
// its key would replay them and send an old event after newer ones. A
// copy of another message of the key stays. The look costs a read of the
// key's parked messages, so a message this lane only naked (a flaky CRM's
// retry) is not looked for.
func TestRedeliveredMessageRemovesItsStaleCopies(t *testing.T) {
	for _, tc := range []struct {
		name        string
		first       lane.Outcome // of the first delivery
		failDeletes int32        // the parked stream's first deletes fail
		wantLeft    []string     // origin sequences of the copies left
		wantCopy    uint64       // stale copies removed
		wantCheck   uint64       // looks for them
	}{
		{"parked, publish lost", lane.Park("poison", errors.New("rejected"), nil), 0, []string{"7"}, 3, 1},
		// The server restarting: the look is tried again, not given up.
		{"parked, publish lost, deletes fail", lane.Park("poison", errors.New("rejected"), nil), 3, []string{"7"}, 3, 1},
		// > 100ms: naked, not retried in hand. The planted copies of
		// sequence 1 cannot exist then (nothing parked it); they stay
		// because nothing looked.
		{"naked here", lane.Retry(150*time.Millisecond, errors.New("crm answered 503")), 0, []string{"1", "1", "7"}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names, js := setup(t, 1)
			ctx := context.Background()
			stage := topology.StageEnricher
			publish(t, js, names, "t1", "k", 1) // stored at events sequence 1

			// Copies a lost park could leave of sequence 1 (held, and
			// parked behind its key), and a copy of another message
			// (sequence 7).
			for i, origin := range []string{"1", "1", "7"} {
				pm := nats.NewMsg(names.ParkedSubject(stage, "t1", "k"))
				pm.Data = []byte("k-0")
				pm.Header.Set(nats.MsgIdHdr, "park:enricher:copy-"+strconv.Itoa(i))
				if i == 0 {
					pm.Header.Set(lane.HeaderHeld, "true")
				} else {
					pm.Header.Set(lane.HeaderParkedBehind, "k-older")
				}
				pm.Header.Set(lane.HeaderOriginStream, names.EventsStream())
				pm.Header.Set(lane.HeaderOriginSeq, origin)
				_, err := js.PublishMsg(ctx, pm)
				require.NoError(t, err)
			}

			var calls atomic.Int32
			done := make(chan uint64, 1)
			var fail atomic.Int32
			fail.Store(tc.failDeletes)
			fjs := &parkedDeletes{JetStream: &lossyPark{JetStream: js, names: names}, parked: names.ParkedStream(),
				hook: failDeletes(&fail, nil)}
			g, err := lane.NewGroup(fjs, lane.Config{Stage: stage, Names: names,
				Logger: zerolog.Nop(), IsolateKeys: true, StepAside: lane.StepAside{Enabled: true},
				PublishRetry: 100 * time.Millisecond,
				Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
					if calls.Add(1) == 1 {
						return tc.first
					}
					done <- m.NumDelivered
					return lane.Done()
				}})
			require.NoError(t, err)
			require.NoError(t, g.Start(ctx))
			t.Cleanup(func() { _ = g.Stop(context.Background()) })
			select {
			case n := <-done:
				require.Equal(t, uint64(2), n, "the message should have been delivered a second time")
			case <-time.After(20 * time.Second):
				t.Fatal("the message was not delivered")
			}

			parked, err := lane.OpenParked(ctx, js, names)
			require.NoError(t, err)
			var left []string
			require.Eventually(t, func() bool {
				msgs, err := parked.Messages(ctx, stage, "k")
				if err != nil {
					return false
				}
				left = left[:0]
				for _, m := range msgs {
					left = append(left, m.Header.Get(lane.HeaderOriginSeq))
				}
				// The lane counts a removed copy after its delete: wait for
				// the count too (stress once read 2 of 3 right after the
				// third copy was gone).
				st := g.Stats()[0]
				return len(left) == len(tc.wantLeft) && st.Acked == 1 && st.StaleCopies >= tc.wantCopy
			}, 10*time.Second, 20*time.Millisecond, "copies left: %v", &left)
			require.Equal(t, tc.wantLeft, left)
			st := g.Stats()[0]
			require.Equal(t, tc.wantCopy, st.StaleCopies, "stale copies removed")
			require.Equal(t, tc.wantCheck, st.StaleChecks, "looks for stale copies")
			require.LessOrEqual(t, fail.Load(), int32(0), "the deletes did not fail as planned")
		})
	}
}
