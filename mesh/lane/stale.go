package lane

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A held copy left behind.
//
// hold publishes the held copy of a message to the parked stream, then
// records its key held, then acks. If the lane loses its connection (or
// the record fails) after the stream stored the copy, the message is
// handed back, and its next delivery may succeed: the key was never
// recorded held, so nothing replays or removes the copy. Left there, it
// would be replayed the next time its key is held, sending an old event
// again after newer ones (seen after a NATS restart in the inline e2e
// test). So a redelivered message that was delivered removes the held
// copies of itself. None of them can be live: while its key is recorded
// held, the lane parks the key's messages behind it instead of delivering
// them, and a replayed message has a sequence (and copies) of its own.

// dropStaleHeldCopies deletes the held copies of m (same origin stream and
// sequence) from the parked stream. Best effort: a failure is logged.
func (l *lane) dropStaleHeldCopies(m *Msg) {
	if l.g.parked == nil || !l.g.cfg.StepAside.Enabled || m.NumDelivered < 2 || m.Type == "" {
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
	defer cancel()
	s, err := l.g.js.Stream(ctx, l.g.cfg.Names.ParkedStream())
	if err != nil {
		l.log.Warn().Err(err).Msg("could not look for a stale held copy")
		return
	}
	subject := l.g.cfg.Names.ParkedSubject(l.g.cfg.Stage, m.Type, m.KeyToken)
	seq := strconv.FormatUint(m.StreamSeq, 10)
	for next := uint64(1); ; {
		pm, err := s.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return
		}
		if err != nil {
			l.log.Warn().Err(err).Msg("could not look for a stale held copy")
			return
		}
		next = pm.Sequence + 1
		if pm.Header.Get(HeaderHeld) != "true" || pm.Header.Get(HeaderOriginSeq) != seq ||
			pm.Header.Get(HeaderOriginStream) != l.stream {
			continue
		}
		if err := s.DeleteMsg(ctx, pm.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			l.log.Warn().Err(err).Uint64("parked_seq", pm.Sequence).Msg("could not remove a stale held copy")
			return
		}
		l.event(l.log.Info(), m).Uint64("parked_seq", pm.Sequence).
			Msg("removed a held copy of a message delivered after all (its hold was never recorded)")
		l.mu.Lock()
		l.stats.StaleHeld++
		l.mu.Unlock()
	}
}
