package lane

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// A held key whose replayed message failed again before the rest of its
// round had passed the lane is "draining" (ParkedKey.Draining names the
// round): its next round waits until the round's last message has been
// parked behind it, which the lane notices and schedules. If that message
// never comes — the holder that published the round failed before
// publishing its last message (a lost stream leader, a kill) and, finding
// the key held, did not go on — the key would stay held for ever with its
// events parked. So the holder also looks for itself: once no message of
// the round is left unacked in the stage's input stream (roundInFlight: a
// message is acked after the lane delivered or parked it), and
// the hold is older than any holder's publish could still be running
// (drainingGrace), the round is over and the key's next round begins.

// drainingGrace is how long after a hold the holder waits before it looks
// for the round's messages itself: longer than a holder's replay may run
// (its context ends after 30s), so no holder still publishes the round.
const drainingGrace = 35 * time.Second

// drainingPoll is how often a draining key's round is looked for again.
const drainingPoll = 5 * time.Second

// checkDraining ends a draining key's wait when its round has left the
// input stream, and returns when to look at the key again.
func (h *holder) checkDraining(ctx context.Context, kvKey string, pk *ParkedKey) time.Time {
	round := pk.Draining
	if next, left := h.roundLeft(ctx, kvKey, pk, round, pk.ParkedAt); !left {
		return next
	}
	err := h.g.parked.update(ctx, kvKey, func(c *ParkedKey) *ParkedKey {
		if c == nil || c.State != StateHeld || c.Draining != round {
			return c
		}
		n := *c
		n.Draining = ""
		return &n
	})
	if err != nil {
		h.g.cfg.Logger.Warn().Err(err).Str("held_key", kvKey).Msg("held key: could not end its last round; trying again")
		return time.Now().Add(time.Second)
	}
	h.g.cfg.Logger.Info().Str("held_key", kvKey).Str("round", round).
		Msg("held key: its last replay round has left the stream without its last message; replaying the key again")
	return time.Now()
}

// checkRoundOver finishes a held key's round that was published entirely
// (nothing of it left in the parked stream) but never finished: the lane
// frees the key (or holds it again) with the round's last message, and a
// process killed in between, or a bucket write lost with its leader, left
// the key "replaying" for ever. Once no message of the round is left in
// the input stream and the round is older than drainingGrace, every one of
// them was delivered (a failure would have held the key, a rejection
// parked it): the holder does what the lane could not (endRound). It
// returns when to look at the key again.
func (h *holder) checkRoundOver(ctx context.Context, kvKey string, pk ParkedKey) time.Time {
	began, err := strconv.ParseInt(pk.ReplayID, 36, 64)
	if !pk.Held || err != nil {
		return time.Time{} // an operator's replay: `sluice parked` follows it
	}
	if next, left := h.roundLeft(ctx, kvKey, &pk, pk.ReplayID, time.Unix(0, began)); !left {
		return next
	}
	again := false
	err = h.g.parked.update(ctx, kvKey, func(c *ParkedKey) *ParkedKey {
		var n *ParkedKey
		n, again = endRound(c, pk.ReplayID)
		return n
	})
	if err != nil {
		h.g.cfg.Logger.Warn().Err(err).Str("held_key", kvKey).Msg("held key: could not finish its round; trying again")
		return time.Now().Add(time.Second)
	}
	h.g.cfg.Logger.Info().Str("held_key", kvKey).Str("round", pk.ReplayID).Bool("again", again).
		Msg("held key: its retry round was delivered but not finished; finished it")
	if again {
		return time.Now()
	}
	return time.Time{}
}

// roundLeft reports whether round of pk's key, begun at began, is over for
// the holder: older than drainingGrace and with no message left in the
// input stream. When it is not, next is when to look again.
func (h *holder) roundLeft(ctx context.Context, kvKey string, pk *ParkedKey, round string, began time.Time) (next time.Time, left bool) {
	if wait := began.Add(drainingGrace); time.Now().Before(wait) {
		return wait, false
	}
	inFlight, err := h.roundInFlight(ctx, pk.Stage, pk.KeyToken, round)
	switch {
	case err != nil:
		h.g.cfg.Logger.Warn().Err(err).Str("held_key", kvKey).Msg("held key: could not look for its round; trying again")
		return time.Now().Add(time.Second), false
	case inFlight:
		return time.Now().Add(drainingPoll), false
	}
	return time.Time{}, true
}

// roundInFlight reports whether a message of the key's replay round is
// still in the stage's input stream, not yet acked by the key's lane. A
// work queue (the dispatch stream) keeps only unacked messages; a stream
// that keeps acked ones (the events stream, whose lanes hold keys with
// dispatcher.inline) is read from the lane's ack floor on.
func (h *holder) roundInFlight(ctx context.Context, stage topology.Stage, keyToken, round string) (bool, error) {
	spec, ok := topology.SpecOf(stage)
	if !ok || spec.Subject == nil {
		return true, nil
	}
	names := h.g.cfg.Names
	p := topology.PartitionOfToken(keyToken, names.Partitions())
	stream := spec.Stream(names)
	s, err := h.g.js.Stream(ctx, stream)
	if err != nil {
		return false, err
	}
	from := uint64(1)
	if !spec.WorkQueue {
		c, err := h.g.js.Consumer(ctx, stream, names.ConsumerName(stage, p))
		if err != nil {
			return false, err
		}
		from = c.CachedInfo().AckFloor.Stream + 1
	}
	inFlight := false
	err = eachBySubject(ctx, s, from, spec.Subject(names, p, "*", keyToken), func(m *jetstream.RawStreamMsg) (bool, error) {
		inFlight = m.Header.Get(HeaderReplay) == round
		return !inFlight, nil
	})
	return inFlight, err
}
