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

// TestRedeliveredMessageRemovesItsStaleCopies: parked copies of a message
// whose park was never recorded (the lane lost its connection after the
// parked stream stored the copy: a held copy, or one parked behind its
// key) are removed once the message, delivered again, succeeds; otherwise
// the next hold or park of its key would replay them and send an old
// event after newer ones. A copy of another message of the key stays.
func TestRedeliveredMessageRemovesItsStaleCopies(t *testing.T) {
	names, js := setup(t, 1)
	ctx := context.Background()
	stage := topology.StageEnricher
	publish(t, js, names, "t1", "k", 1) // stored at events sequence 1

	// The copies a lost park could leave of sequence 1 (held, and parked
	// behind its key), and a copy of another message (sequence 7).
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
	g, err := lane.NewGroup(js, lane.Config{Stage: stage, Names: names, Logger: zerolog.Nop(),
		IsolateKeys: true, StepAside: lane.StepAside{Enabled: true},
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			if calls.Add(1) == 1 {
				// Handed back once, as after a lost connection.
				return lane.Retry(150*time.Millisecond, errors.New("connection lost")) // > 100ms: naked, not retried in hand
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

	s, err := js.Stream(ctx, names.ParkedStream())
	require.NoError(t, err)
	var left []string
	require.Eventually(t, func() bool {
		left = left[:0]
		for seq := uint64(1); ; {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(names.ParkedSubject(stage, "t1", "k")))
			if err != nil {
				break
			}
			left = append(left, m.Header.Get(lane.HeaderOriginSeq))
			seq = m.Sequence + 1
		}
		return len(left) == 1
	}, 10*time.Second, 20*time.Millisecond, "copies left: %v", &left)
	require.Equal(t, []string{"7"}, left, "only the other message's copy may stay")
	require.Equal(t, uint64(2), g.Stats()[0].StaleCopies)
}
