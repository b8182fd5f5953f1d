package lane

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Acked messages left in a work queue.
//
// On a work-queue stream (the dispatch stream) the server removes a message
// when its consumer acks it. The consumer's ack floor and the stream's
// removal are stored separately and asynchronously, so a process that
// embeds the server and is killed (kill -9) between the two can come back
// with a message the consumer already acked still in the stream, at or
// below the ack floor: the consumer never delivers it again and the stream
// never removes it. It was applied (the lane acks only after its effect
// and records are stored), but the stream reports a backlog that never
// drains, and `sluice partitions` waits for it for ever.
//
// sweepAcked removes those messages when a lane opens its consumer. Every
// message of the lane's filter at or below the ack floor was acked by this
// consumer: a work queue gives each subject to one consumer, a lane's
// work-queue consumer starts at the beginning of the stream (DeliverAll),
// and a lane never skips a message (MaxDeliver -1).

// sweepAcked deletes the messages of the lane's filter at or below the
// consumer's ack floor from a work-queue stream. It is best effort: a
// failure is logged and the lane goes on.
func (l *lane) sweepAcked(ctx context.Context, s jetstream.Stream, ci *jetstream.ConsumerInfo) {
	si := s.CachedInfo()
	if si == nil || ci == nil || si.Config.Retention != jetstream.WorkQueuePolicy || si.State.Msgs == 0 {
		return
	}
	if ci.Config.DeliverPolicy != jetstream.DeliverAllPolicy {
		// A consumer made to start later (by hand) has a floor below which
		// it never delivered anything: those messages are not its acked ones.
		return
	}
	floor := ci.AckFloor.Stream
	if floor == 0 || floor < si.State.FirstSeq {
		return
	}
	if floor > si.State.LastSeq {
		// The consumer is ahead of the stream (the stream lost its tail):
		// its floor says nothing about the messages stored since.
		l.log.Warn().Uint64("ack_floor", floor).Uint64("last_seq", si.State.LastSeq).
			Msg("lane consumer's ack floor is beyond its stream's last message; not removing acked messages")
		return
	}
	removed, failed := 0, false
	err := eachBySubject(ctx, s, si.State.FirstSeq, l.filter, func(m *jetstream.RawStreamMsg) (bool, error) {
		if m.Sequence > floor {
			return false, nil
		}
		if err := deleteMsg(ctx, s, m.Sequence); err != nil {
			l.log.Warn().Err(err).Uint64("seq", m.Sequence).Msg("could not remove an acked message left in the work queue")
			failed = true
			return false, nil
		}
		removed++
		return true, nil
	})
	if err != nil {
		l.log.Warn().Err(err).Msg("could not look for acked messages left in the work queue")
		return
	}
	if failed {
		return
	}
	if removed > 0 {
		l.log.Warn().Int("removed", removed).Uint64("ack_floor", floor).
			Msg("removed messages the lane had already acked but the work queue still held (left by a crash)")
		l.mu.Lock()
		l.stats.Swept += uint64(removed)
		l.mu.Unlock()
	}
}

// eachBySubject calls visit with every message of stream s on subject
// (wildcards allowed) from sequence from on, in order, until visit says
// stop or the stream has no more; one GetMsg per message.
func eachBySubject(ctx context.Context, s jetstream.Stream, from uint64, subject string,
	visit func(m *jetstream.RawStreamMsg) (more bool, err error)) error {
	for seq := from; ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if more, err := visit(m); err != nil || !more {
			return err
		}
		seq = m.Sequence + 1
	}
}

// deleteMsg deletes seq from s; a message already gone (another process,
// or the lane and a replay round, deleted it first) counts as deleted.
// The server answers the delete of a missing message with an API error
// that nats.go reports as "message deletion unsuccessful: … no message
// found", not as jetstream.ErrMsgNotFound, so a failed delete is checked
// with a read of the sequence: treated as a failure, it made a replay
// round report an error (and try again) for a copy the lane had removed.
func deleteMsg(ctx context.Context, s jetstream.Stream, seq uint64) error {
	err := s.DeleteMsg(ctx, seq)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if _, gerr := s.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return err
}
