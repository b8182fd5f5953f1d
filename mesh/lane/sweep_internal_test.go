package lane

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
)

// workQueueView makes a limits stream look like a work queue: acked
// messages stay in it, as after a kill -9 that kept a work-queue
// consumer's ack floor but lost the stream's removal of the messages.
type workQueueView struct{ jetstream.Stream }

func (s workQueueView) CachedInfo() *jetstream.StreamInfo {
	info := *s.Stream.CachedInfo()
	info.Config.Retention = jetstream.WorkQueuePolicy
	return &info
}

// A lane opening its consumer removes the messages of its filter at or
// below the consumer's ack floor that a crash left in a work-queue stream,
// and nothing else: not the ones above the floor, not another lane's, not
// below the floor of a consumer that did not start at the beginning.
func TestSweepAckedRemovesOnlyAckedMessagesOfTheLane(t *testing.T) {
	srv := meshtest.RunServer(t, t.TempDir())
	nc, js := meshtest.Connect(t, srv.ClientURL())
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "Q", Subjects: []string{"q.>"}})
	require.NoError(t, err)
	for _, subj := range []string{"q.0.a", "q.1.a", "q.0.b", "q.0.c", "q.0.d"} { // seqs 1..5
		_, err := js.Publish(ctx, subj, []byte(subj))
		require.NoError(t, err)
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "lane0", FilterSubject: "q.0.>",
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1})
	require.NoError(t, err)
	for range 2 { // acks seqs 1 and 3: the floor is 3
		b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		for m := range b.Messages() {
			require.NoError(t, m.DoubleAck(ctx))
		}
	}
	ci, err := c.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(3), ci.AckFloor.Stream)

	l := &lane{filter: "q.0.>", log: zerolog.Nop()}
	started := *ci
	started.Config.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
	s, err = js.Stream(ctx, "Q")
	require.NoError(t, err)
	l.sweepAcked(ctx, workQueueView{s}, &started)
	require.Equal(t, uint64(5), stateOf(ctx, t, js).Msgs, "a consumer that started later: nothing is its acked")

	s, err = js.Stream(ctx, "Q")
	require.NoError(t, err)
	l.sweepAcked(ctx, workQueueView{s}, ci)
	st := stateOf(ctx, t, js)
	require.Equal(t, uint64(3), st.Msgs)
	require.Equal(t, uint64(2), st.FirstSeq, "the lane's acked message 1 is removed")
	require.Equal(t, []uint64{3}, st.Deleted, "the lane's acked message 3 is removed")
	require.Equal(t, uint64(2), l.stats.Swept)

	// Not a work queue: nothing is removed.
	l.sweepAcked(ctx, s, ci)
	require.Equal(t, uint64(3), stateOf(ctx, t, js).Msgs)
}

func stateOf(ctx context.Context, t *testing.T, js jetstream.JetStream) jetstream.StreamState {
	s, err := js.Stream(ctx, "Q")
	require.NoError(t, err)
	info, err := s.Info(ctx, jetstream.WithDeletedDetails(true))
	require.NoError(t, err)
	return info.State
}

// A delete of a message another process deleted first counts as done:
// the server's answer ("no message found", err_code 10057) is not
// jetstream.ErrMsgNotFound, so the check `errors.Is(err, ErrMsgNotFound)`
// the lane made before took it for a failure. A delete that really fails
// (the message still stored) is still an error.
func TestDeleteMsgOfAMessageAlreadyGone(t *testing.T) {
	srv := meshtest.RunServer(t, t.TempDir())
	nc, js := meshtest.Connect(t, srv.ClientURL())
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "D", Subjects: []string{"d.>"}})
	require.NoError(t, err)
	for range 2 {
		_, err := js.Publish(ctx, "d.a", []byte("x"))
		require.NoError(t, err)
	}
	require.NoError(t, s.DeleteMsg(ctx, 1))
	err = s.DeleteMsg(ctx, 1)
	require.Error(t, err, "the server should refuse a second delete")
	require.NotErrorIs(t, err, jetstream.ErrMsgNotFound, "nats.go now reports ErrMsgNotFound: deleteMsg's read is not needed any more")
	require.NoError(t, deleteMsg(ctx, s, 1), "a message already deleted")
	require.NoError(t, deleteMsg(ctx, s, 2), "a stored message")
	_, err = s.GetMsg(ctx, 2)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
	failing := failingDelete{Stream: s}
	_, err = js.Publish(ctx, "d.a", []byte("x")) // seq 3, stored
	require.NoError(t, err)
	require.Error(t, deleteMsg(ctx, failing, 3), "a delete that failed with the message still stored")
}

// failingDelete is a stream whose deletes fail (the server restarting).
type failingDelete struct{ jetstream.Stream }

func (failingDelete) DeleteMsg(context.Context, uint64) error { return errors.New("nats: timeout") }
