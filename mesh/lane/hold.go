package lane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// Per-key retry holds (Config.StepAside).
//
// With one message in flight per partition, a failing request holds every
// key of its partition while it waits for its retry. A flaky dependency
// (one CRM request in twenty answered 503) then slows the whole stage to a
// crawl. With StepAside on, a message whose handler reports a failure that
// may be its own (Outcome.StepAside) while the partition's circuit is
// closed steps aside instead (after StepAside.InPlace failures retried in
// place, which absorb most random errors without parking anything, and
// RoundInPlace more for a replayed message, whose step aside would park
// the rest of its round behind it again):
//
//   - the runner parks it in the parked stream with Sluice-Held: true and
//     records its key as held in the parked-keys bucket (state "held", its
//     failure count and the time of its next try) before acking it, as a
//     parked key (isolate.go); every later event of the key is then parked
//     behind it, in order, and the partition's other keys flow on;
//   - when the key's retry time has come, the group's holder replays the
//     key's parked messages (oldest first, each round bounded by the last
//     parked sequence recorded in the bucket, so two replicas replaying at
//     once publish the same messages, deduplicated by id) into the stage's
//     input, as `sluice parked replay` does; when the last one succeeds the
//     key is free. A replayed message that fails again holds the key again,
//     with the next backoff; one the handler parks for good leaves the key
//     parked for the operator.
//
// Everything is in the bucket and the streams before a message is acked, so
// a killed process loses nothing and reorders nothing: a held key's later
// events cannot overtake it (they are parked behind it until its replay
// has run), and any process of the stage picks up held keys whose retry
// time passed (its watch of the bucket schedules them).
//
// The circuit: CircuitFailures failures that may step aside in a row in
// one partition (no success in between), each within CircuitWindow of the
// previous one, open it; the lane then holds its head as it always did
// (retry, then the handler's pause, with its alert), because a dependency
// that fails every request is down, not flaky. A success closes it.

// StateHeld is the state of a key held for a retry.
const StateHeld = "held"

// HeaderHeld marks a parked message that stepped aside for a retry: the
// runner replays it by itself.
const HeaderHeld = "Sluice-Held"

// ReasonRetrying prefixes the reason of a held message.
const ReasonRetrying = "retrying"

// recordHold records that m stepped aside (before it is acked) and returns
// the key's failure count and next retry time.
func (l *lane) recordHold(m *Msg, o Outcome, iso isolation) (int, time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa := l.g.cfg.StepAside
	var failures int
	var at time.Time
	err := l.g.parked.update(ctx, iso.kvKey, func(cur *ParkedKey) *ParkedKey {
		now := time.Now().UTC()
		switch {
		case cur == nil, iso.replay && cur.State == StateReplaying && cur.ReplayID == iso.pk.ReplayID:
			n := ParkedKey{}
			if cur != nil {
				n = *cur
			}
			key, err := topology.KeyFromToken(m.KeyToken)
			if err != nil {
				key = m.KeyToken
			}
			n.Stage, n.Type, n.Key, n.KeyToken = l.g.cfg.Stage, m.Type, key, m.KeyToken
			n.FirstSeq, n.FirstID, n.Reason, n.ParkedAt = m.StreamSeq, l.msgID(m), o.Reason, now
			n.State, n.ReplayID, n.Held, n.Upto, n.Draining = StateHeld, "", true, 0, ""
			if iso.replay && m.Header.Get(HeaderReplayLast) == "" {
				// The rest of this round is still on its way: the next
				// round waits for its last message (parked behind).
				n.Draining = iso.pk.ReplayID
			}
			n.Count++
			n.Failures++
			n.RetryAt = now.Add(sa.backoff(n.Failures))
			failures, at = n.Failures, n.RetryAt
			return &n
		default:
			// Held or parked meanwhile (another replica): behind it.
			n := *cur
			n.Count++
			failures, at = 0, time.Time{}
			return &n
		}
	})
	return failures, at, err
}

// holder replays held keys when their retry time has come. One per group.
type holder struct {
	g      *Group
	mu     sync.Mutex
	due    map[string]time.Time // by KV key
	busy   map[string]bool
	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// trouble throttles the warnings of failed replay steps.
	trouble trouble
}

// maxReplays bounds the replays a holder runs at once.
const maxReplays = 8

func newHolder(g *Group) *holder {
	ctx, cancel := context.WithCancel(context.Background())
	h := &holder{g: g, due: map[string]time.Time{}, busy: map[string]bool{}, wake: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, trouble: trouble{log: g.cfg.Logger}}
	h.wg.Add(1)
	go h.run()
	return h
}

func (h *holder) stop() {
	h.cancel()
	h.wg.Wait()
}

// schedule asks for a replay of kvKey at at (the earlier of two asks wins).
func (h *holder) schedule(kvKey string, at time.Time) {
	h.mu.Lock()
	if cur, ok := h.due[kvKey]; !ok || at.Before(cur) {
		h.due[kvKey] = at
	}
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *holder) run() {
	defer h.wg.Done()
	sem := make(chan struct{}, maxReplays)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		next := now.Add(time.Hour)
		var ready []string
		h.mu.Lock()
		for k, at := range h.due {
			switch {
			case h.busy[k]:
			case !at.After(now):
				ready = append(ready, k)
				delete(h.due, k)
				h.busy[k] = true
			case at.Before(next):
				next = at
			}
		}
		h.mu.Unlock()
		for _, k := range ready {
			select {
			case sem <- struct{}{}:
			case <-h.ctx.Done():
				return
			}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				again := h.replay(k)
				h.mu.Lock()
				delete(h.busy, k)
				h.mu.Unlock()
				if !again.IsZero() {
					h.schedule(k, again)
				} else {
					select {
					case h.wake <- struct{}{}:
					default:
					}
				}
				<-sem
			}()
		}
		t.Reset(time.Until(next))
		select {
		case <-h.ctx.Done():
			return
		case <-h.wake:
		case <-t.C:
		}
	}
}

// replay runs one round of kvKey's automatic replay. It returns when to
// look again (zero: nothing more to do here; the lane or the watch
// schedules the next round).
func (h *holder) replay(kvKey string) time.Time {
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	ps := h.g.parked
	retry := time.Now().Add(time.Second)
	pk, _, err := ps.get(ctx, kvKey)
	switch {
	case err != nil:
		h.trouble.warn(kvKey, err, "held key: read failed; trying again")
		return retry
	case pk == nil || !pk.Held:
		return time.Time{} // free, or parked for good: the operator's
	case pk.State == StateHeld && pk.Draining != "":
		// The lane schedules it when the round's last message has passed;
		// the holder looks too, in case that message never comes.
		return h.checkDraining(ctx, kvKey, pk)
	case pk.State == StateHeld && time.Now().Before(pk.RetryAt):
		return pk.RetryAt
	case pk.State != StateHeld && pk.State != StateReplaying:
		return time.Time{}
	}
	// Begin: held → replaying with a new id (an interrupted round keeps its
	// id and bound, so what it already published is deduplicated).
	var cur ParkedKey
	err = ps.update(ctx, kvKey, func(c *ParkedKey) *ParkedKey {
		if c == nil || !c.Held || (c.State != StateHeld && c.State != StateReplaying) || c.Draining != "" {
			cur = ParkedKey{}
			return c
		}
		n := *c
		if n.State == StateHeld {
			n.State, n.ReplayID, n.Count, n.Upto = StateReplaying, strconv.FormatInt(time.Now().UnixNano(), 36), 0, 0
		}
		cur = n
		return &n
	})
	if err != nil {
		h.trouble.warn(kvKey, err, "held key: could not begin its replay; trying again")
		return retry
	}
	if cur.State != StateReplaying {
		return time.Time{}
	}
	adm := &Parked{js: h.g.js.(AdminJetStream), names: h.g.cfg.Names, ps: ps}
	msgs, err := adm.Messages(ctx, cur.Stage, cur.Key)
	if err != nil {
		h.trouble.warn(kvKey, err, "held key: could not read its parked messages; trying again")
		return retry
	}
	if cur.Upto == 0 && len(msgs) > 0 {
		// Bound the round by what is parked now; a replica replaying at the
		// same time uses the same bound.
		upto := msgs[len(msgs)-1].Sequence
		err = ps.update(ctx, kvKey, func(c *ParkedKey) *ParkedKey {
			if c == nil || c.State != StateReplaying || c.ReplayID != cur.ReplayID {
				return c
			}
			n := *c
			if n.Upto == 0 {
				n.Upto = upto
			}
			cur = n
			return &n
		})
		if err != nil {
			h.trouble.warn(kvKey, err, "held key: could not bound its replay; trying again")
			return retry
		}
	}
	var round []*jetstream.RawStreamMsg
	for _, pm := range msgs {
		if cur.Upto != 0 && pm.Sequence <= cur.Upto {
			round = append(round, pm)
		}
	}
	inOrder(round)
	if len(round) == 0 && cur.Upto == 0 && len(msgs) == 0 {
		return h.emptyRound(ctx, kvKey, cur.ReplayID)
	}
	if len(round) == 0 {
		// Nothing left to publish: the round is on its way through the
		// lane, which frees the key (or holds it again) when its last
		// message is settled. Freeing it here could let an event of the
		// key that waits in the stream ahead of the round overtake it;
		// once the round has left the stream the holder may (draining.go).
		return h.checkRoundOver(ctx, kvKey, cur)
	}
	s, err := h.g.js.Stream(ctx, h.g.cfg.Names.ParkedStream())
	if err != nil {
		return retry
	}
	for i, pm := range round {
		out, err := adm.replayMsg(cur.Stage, pm, cur.ReplayID, i == len(round)-1)
		if err == nil {
			_, err = h.g.js.PublishMsg(ctx, out)
		}
		if err != nil {
			h.trouble.warn(kvKey, err, "held key: republish failed; trying again")
			return retry
		}
		if err := deleteMsg(ctx, s, pm.Sequence); err != nil {
			h.trouble.warn(kvKey, err, "held key: delete of a replayed message failed; trying again")
			return retry
		}
	}
	h.trouble.ok()
	h.g.cfg.Logger.Debug().Str("key", cur.Key).Int("messages", len(round)).Int("failures", cur.Failures).
		Msg("held key replayed")
	return time.Time{}
}

// emptyRound ends a round that found nothing parked and published
// nothing. A held key's count can promise a message the parked stream does
// not hold: a message parked behind it, acked, and delivered again after a
// kill is parked again with the same id, which the parked stream drops as a
// duplicate (its first copy may already be replayed). With nothing parked
// and nothing of the round in flight, no event of the key waits behind
// anything: the key is free. If the lane parked one since the round began,
// the key is held again and replayed at once.
func (h *holder) emptyRound(ctx context.Context, kvKey, replayID string) time.Time {
	again := false
	err := h.g.parked.update(ctx, kvKey, func(c *ParkedKey) *ParkedKey {
		if c != nil && c.Upto != 0 {
			again = false
			return c // bounded meanwhile: a replica's round is under way
		}
		var n *ParkedKey
		n, again = endRound(c, replayID)
		return n
	})
	switch {
	case err != nil:
		h.trouble.warn(kvKey, err, "held key: could not end an empty round; trying again")
		return time.Now().Add(time.Second)
	case again:
		return time.Now()
	}
	return time.Time{}
}

// observeHeld schedules a held key seen in the bucket (by the watch, so
// that any process of the stage picks up keys a killed one held).
func (h *holder) observeHeld(kvKey string, value []byte) {
	pk, err := decodeParkedKey(value)
	if err != nil || !pk.Held {
		return
	}
	switch pk.State {
	case StateHeld:
		// The holding process replays at RetryAt; others look a little
		// later, in case it is gone.
		h.schedule(kvKey, pk.RetryAt.Add(orphanGrace))
	case StateReplaying:
		h.schedule(kvKey, time.Now().Add(orphanGrace))
	}
}

// orphanGrace is how long after a held key's retry time another process
// takes it over.
const orphanGrace = 5 * time.Second

// resumer is the part of jetstream.JetStream a probe needs.
type resumer interface {
	ResumeConsumer(ctx context.Context, stream, consumer string) (*jetstream.ConsumerPauseResponse, error)
}

// hold carries out a KindHold: park m aside with Sluice-Held, record its
// key as held, ack, and schedule the key's retry.
func (l *lane) hold(ctx context.Context, m *Msg, jm jetstream.Msg, o Outcome, iso isolation) bool {
	pm := l.parkMsg(m, o)
	pm.Header.Set(HeaderHeld, "true")
	if _, err := l.publishCopy(ctx, pm); err != nil {
		l.failed(jm, l.g.cfg.PublishRetry, fmt.Errorf("publish held: %w", err))
		l.event(l.log.Warn(), m).Err(err).Msg("held publish failed; holding the lane")
		return false
	}
	failures, at, err := l.recordHold(m, o, iso)
	if err != nil {
		l.failed(jm, l.g.cfg.PublishRetry, fmt.Errorf("record held key: %w", err))
		l.event(l.log.Warn(), m).Err(err).Msg("held-key record failed; holding the lane")
		return false
	}
	l.mu.Lock()
	l.stats.Held++
	l.mu.Unlock()
	l.event(l.log.Debug(), m).Err(o.Err).Int("failures", failures).Time("retry_at", at).Msg("key stepped aside for a retry")
	if failures == l.g.cfg.StepAside.AlertAfter {
		l.alert(ctx, "key_held", m, o.Reason, at)
	}
	l.acked(jm, m)
	if !at.IsZero() {
		l.g.holder.schedule(iso.kvKey, at)
	}
	return true
}

// scan schedules every held key of the stage in the bucket (after a
// restart, or keys a killed process held).
func (h *holder) scan(ctx context.Context) error {
	lister, err := h.g.parked.kv.ListKeysFiltered(ctx, string(h.g.cfg.Stage)+".>")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lane: held keys: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	_ = lister.Stop()
	for _, k := range keys {
		e, err := h.g.parked.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		pk, err := decodeParkedKey(e.Value())
		if err != nil || !pk.Held {
			continue
		}
		h.schedule(k, time.Now())
	}
	return nil
}

// probe tries probe every ProbeEvery while the lane is paused (until
// until) and resumes the lane's consumer after the first success.
func (l *lane) probe(probe func(context.Context) error, until time.Time) {
	l.g.wg.Add(1)
	go func() {
		defer l.g.wg.Done()
		t := time.NewTicker(l.g.cfg.ProbeEvery)
		defer t.Stop()
		for {
			select {
			case <-l.ctx.Done():
				return
			case <-l.quit:
				return
			case <-t.C:
			}
			if !time.Now().Before(until) {
				return
			}
			pctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
			err := probe(pctx)
			l.mu.Lock()
			l.stats.Probes++
			l.mu.Unlock()
			if err == nil {
				if r, ok := l.g.js.(resumer); ok {
					_, err = r.ResumeConsumer(pctx, l.stream, l.name)
				} else {
					err = errors.New("the JetStream cannot resume consumers")
				}
				cancel()
				if err != nil {
					l.log.Warn().Err(err).Msg("probe succeeded but the lane could not be resumed; it resumes when the pause ends")
					return
				}
				l.mu.Lock()
				l.stats.ProbeResumes++
				l.mu.Unlock()
				l.log.Info().Msg("probe succeeded; lane resumed before the end of its pause")
				return
			}
			cancel()
		}
	}()
}
