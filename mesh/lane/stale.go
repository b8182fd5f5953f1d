package lane

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/retry"
)

// A parked copy left behind.
//
// The lane parks a message (held for a retry, or behind its parked key) by
// storing a copy in the parked stream, then recording the key, then
// acking. If the lane loses its connection (or the record fails) after the
// stream stored the copy, the message is handed back, and its next
// delivery may succeed (the key was freed meanwhile, or never recorded):
// nothing replays or removes the copy. Left there, it would be replayed
// the next time its key is held or parked, sending an old event again
// after newer ones (seen after a NATS restart in the inline e2e test, a
// held copy once and a "behind" copy once). So a redelivered message that
// was delivered removes the parked copies of itself. None of them can be
// live: while its key is recorded held or parked, the lane parks the
// key's messages behind it instead of delivering them, and a replayed
// message has a sequence (and copies) of its own.

// The look costs a read of the key's parked messages (one request per
// message), so it runs only when a copy can exist: the lane saw fewer
// deliveries of m than the server made (an earlier one went to a process
// that was killed, or to a pull that was lost), or one of those it saw was
// parked or held. A message retried after a nak by this lane (a flaky CRM:
// most redeliveries) costs nothing. Looking on every redelivery slowed the
// chaos suite's drain under 30 % 5xx (docs/runbook.md, "Chaos suite"):
// a held key's replayed messages fail and come back often, and each look
// read the hundred-odd messages parked behind it.

// dropStaleCopies deletes the parked copies of m (same origin stream and
// sequence) from the parked stream. A failed read or delete (the server
// restarting) is tried again for up to 5 s (the partition waits); then it
// is logged, and the copy stays.
func (l *lane) dropStaleCopies(m *Msg) {
	if l.g.parked == nil || m.NumDelivered < 2 || m.Type == "" {
		return
	}
	if m.StreamSeq == l.headSeq && m.NumDelivered <= l.headSeen && !l.headParked {
		return
	}
	l.mu.Lock()
	l.stats.StaleChecks++
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
	defer cancel()
	seq := strconv.FormatUint(m.StreamSeq, 10)
	err := l.dropParked(ctx, m, func(pm *jetstream.RawStreamMsg) (drop, more bool) {
		return pm.Header.Get(HeaderOriginSeq) == seq && pm.Header.Get(HeaderOriginStream) == l.stream, true
	}, "removed a parked copy of a message delivered after all (its park was never recorded)")
	if err != nil {
		// The message is acked: nothing looks again. Left there, the copy
		// would be replayed by the key's next hold or park.
		l.event(l.log.Warn(), m).Err(err).Msg("could not look for (or remove) a stale parked copy; check sluice parked list")
	}
}

// dropParked deletes the parked messages of m's key that match says to
// drop, in parked order until it says no more, each logged with why and
// counted in StaleCopies. A failed read or delete (the server restarting)
// is tried again, from the start, until ctx ends (parkedRetry).
func (l *lane) dropParked(ctx context.Context, m *Msg, match func(*jetstream.RawStreamMsg) (drop, more bool), why string) error {
	subject := l.g.cfg.Names.ParkedSubject(l.g.cfg.Stage, m.Type, m.KeyToken)
	return retryParked(ctx, func() error {
		s, err := l.g.js.Stream(ctx, l.g.cfg.Names.ParkedStream())
		if err != nil {
			return err
		}
		return eachBySubject(ctx, s, 1, subject, func(pm *jetstream.RawStreamMsg) (bool, error) {
			drop, more := match(pm)
			if !drop {
				return more, nil
			}
			if err := deleteMsg(ctx, s, pm.Sequence); err != nil {
				return false, err
			}
			l.event(l.log.Info(), m).Uint64("parked_seq", pm.Sequence).Str("reason", pm.Header.Get(HeaderParkReason)).Msg(why)
			l.mu.Lock()
			l.stats.StaleCopies++
			l.mu.Unlock()
			return more, nil
		})
	})
}

// parkedRetry is the wait between tries of a look at the parked stream
// that must not be skipped (a stale copy's or a round copy's removal).
var parkedRetry = retry.Policy{Delay: 50 * time.Millisecond, Max: time.Second}

// retryParked runs f until it succeeds or ctx ends (a server restarting
// answers a few requests with errors).
func retryParked(ctx context.Context, f func() error) error {
	for failures := 0; ; failures++ {
		err := f()
		if err == nil {
			return nil
		}
		t := time.NewTimer(parkedRetry.Backoff(failures))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %d tries: %w)", ctx.Err(), failures+1, err)
		}
	}
}

// A round's copies left behind.
//
// The holder republishes a held key's round (as `sluice parked replay`
// does an operator's) and deletes each parked copy after its republish. A
// delete that fails (the server restarting), or a holder (or command)
// killed between the two, leaves the copy parked while the round's
// messages still run: the lane frees the key at the round's last message,
// and nothing looks at the copy again until the key's next hold replays
// it, an old event after newer ones. So before it frees the key, the lane
// removes the key's parked messages at or below the round's bound
// (ParkedKey.Upto). Each of them was read into the round and republished
// before the round's last message (the holder publishes that one last),
// and the lane has run them all, in order, before it. A delete that fails
// is tried again (parkedRetry); one that keeps failing keeps a held key
// held (the last message comes back and is handled again). An operator's
// round records its bound too (Parked.bound); its last message is acked
// before the look, so a removal that keeps failing is logged and the key
// freed, as before.

// dropRoundCopies removes the parked copies of m's key at or below upto,
// trying again until ctx ends.
func (l *lane) dropRoundCopies(ctx context.Context, m *Msg, upto uint64) error {
	if upto == 0 {
		return nil
	}
	return l.dropParked(ctx, m, func(pm *jetstream.RawStreamMsg) (drop, more bool) {
		return pm.Sequence <= upto, pm.Sequence <= upto
	}, "removed a parked copy its key's replay round had republished (its delete had not happened)")
}
