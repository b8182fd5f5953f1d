package lane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// Service replicas: one worker per partition.
//
// Any number of processes may run a stage's lanes. Each lane consumer is
// pinned (topology.LaneConsumerConfig: PriorityPolicyPinned, one priority
// group) and every lane pulls with that group, so the server delivers a
// lane's messages to one process — the pinned one — and keeps it pinned as
// long as it sends a pull request at least every PinnedTTL (a lane pulls
// every PullExpiry, at most PinnedTTL/3). When the pinned process dies or is
// cut off, the server unpins it after PinnedTTL and pins the next process
// that pulls; a message in flight comes back after AckWait. A clean Stop
// unpins the lanes it held, so a peer takes over at once.
//
// The server marks every message with the pin id (Nats-Pin-Id); the client
// library keeps it on the jetstream.Consumer object and sends it with every
// pull. The lane therefore keeps its Consumer across iterator restarts (a
// new object would pull without the pin id and wait PinnedTTL for its own
// old pin to expire), and records the pin id in Stats.PinID.

// headerPinID is the header the server puts the pin id in.
const headerPinID = "Nats-Pin-Id"

// consumer creates the lane's durable consumer or brings it to the current
// config, and returns the Consumer to pull from. It keeps what an update
// must not change: the start position (a consumer recreated after its
// fence) and a pause that is still running (an update must not cut an
// outlet pause short). A consumer made before pinning existed is updated to
// the pinned priority group in place (the server allows that update). A
// missing consumer is recreated after the lane's fence, not from the start
// of the stream.
func (l *lane) consumer(ctx context.Context) (jetstream.Consumer, error) {
	s, err := l.g.js.Stream(ctx, l.stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", l.stream, err)
	}
	info := s.CachedInfo()
	l.mu.Lock()
	l.created = info.Created
	l.mu.Unlock()
	want := l.g.cfg.Names.LaneConsumerConfig(l.g.cfg.Stage, l.p, l.filter)
	cur, err := l.g.js.Consumer(ctx, l.stream, l.name)
	var heldPin bool
	switch {
	case err == nil:
		info := cur.CachedInfo()
		if info.Delivered.Consumer == 0 && l.g.fence != nil && l.g.fence.current(l.fenceKey, l.created) > 0 {
			// Made by someone else (the watchdog) since the lane applied
			// messages: a new incarnation.
			l.fresh = true
		}
		l.sweepAcked(ctx, s, info)
		want = keepPosition(want, info.Config)
		if sameLaneConfig(info.Config, want) {
			if l.cons == nil {
				l.cons = cur
			}
			return l.cons, nil
		}
		if info.Config.PriorityPolicy != jetstream.PriorityPolicyPinned {
			l.log.Info().Msg("lane consumer updated to a pinned priority group (one replica per lane)")
		}
		heldPin = l.cons != nil && l.pinned(info)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		fence, err := l.g.fence.read(ctx, l.fenceKey, l.created)
		if err != nil {
			return nil, err
		}
		if want, err = l.g.cfg.Names.WithOperatorPause(ctx, l.g.js, topology.ResumeAfter(want, fence, info.Config.Retention)); err != nil {
			return nil, err
		}
		if want.PauseUntil != nil {
			l.log.Info().Time("until", *want.PauseUntil).Msg("lane consumer created paused: an operator's pause of it is still running (audit stream)")
		}
		l.fresh = l.cons != nil || fence > 0
		switch {
		case want.MemoryStorage && (l.cons != nil || fence > 0):
			// Expected after a NATS server restart (LaneConsumerConfig).
			l.log.Info().Msg("lane consumer (in memory) missing after a NATS restart or a deletion; creating it at the work queue's first message")
		case l.cons != nil || fence > 0:
			l.log.Warn().Uint64("fence", fence).Uint64("start_seq", want.OptStartSeq).
				Msg("lane consumer missing; creating it (after the lane's fence unless the stream is a work queue)")
		}
	default:
		return nil, err
	}
	c, err := l.g.js.CreateOrUpdateConsumer(ctx, l.stream, want)
	if err != nil {
		return nil, err
	}
	l.cons = c
	if heldPin {
		// The new Consumer object does not know our pin id; let the pin go
		// so that we (or a peer) are pinned afresh without waiting PinnedTTL.
		l.unpin(ctx)
	}
	return c, nil
}

// quiet handles a pull that went quiet (jetstream.ErrNoHeartbeat). The
// iterator has already reset its pull and asks again; closing it could
// strand a buffered message until AckWait. Unless the consumer is gone: a
// NATS server restart loses an in-memory consumer (LaneConsumerConfig)
// without a word to the pulls waiting on it, and pulling again would wait
// for it forever. Then the iterator is drained and run opens a new one,
// which recreates the consumer.
func (l *lane) quiet(it jetstream.MessagesContext, err error) {
	l.mu.Lock()
	l.stats.MissedHeartbeats++
	l.mu.Unlock()
	if !l.consumerGone() {
		l.log.Info().Err(err).Msg("lane pull went quiet; pulling again")
		return
	}
	l.log.Info().Msg("lane consumer gone (a NATS restart or a deletion); opening the lane again")
	l.mu.Lock()
	l.draining[it] = true
	l.mu.Unlock()
	it.Drain()
}

// consumerGone reports whether the server says the lane's consumer (or its
// stream) does not exist; false when it cannot tell.
func (l *lane) consumerGone() bool {
	ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
	defer cancel()
	_, err := l.g.js.Consumer(ctx, l.stream, l.name)
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// forgotten reports whether the server may have forgotten deliveries of
// the message it delivered with consumer sequence consSeq: the first one
// from a new incarnation of the consumer (the lane recreated it, or found
// it recreated, after applying messages: an in-memory consumer after a
// NATS restart, a deleted one), or one whose consumer sequence went back
// (lost or lagging consumer state). Only the head can have been in flight
// in the earlier incarnation (MaxAckPending=1). The lane then counts it as
// delivered before (Msg.Redelivered, the ledger's delivery count, the
// stale parked copy check): a create is looked up first instead of sent
// blind, and the audit counts a possible duplicate. At worst that is one
// lookup that was not needed.
func (l *lane) forgotten(consSeq uint64) bool {
	back := consSeq <= l.lastConsSeq
	l.lastConsSeq = consSeq
	if l.fresh {
		l.fresh = false
		return true
	}
	return back
}

// keepPosition copies from the existing consumer's config have what an
// update must keep. That includes its storage, which the server does not
// let an update change: a dispatcher lane consumer created before
// LaneConsumerConfig asked for memory storage keeps its state file until
// it is recreated (docs/runbook.md, "In-memory dispatcher consumers").
func keepPosition(want, have jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	want.DeliverPolicy, want.OptStartSeq, want.OptStartTime = have.DeliverPolicy, have.OptStartSeq, have.OptStartTime
	want.MemoryStorage = have.MemoryStorage
	if pu := have.PauseUntil; pu != nil && pu.After(time.Now()) {
		want.PauseUntil = pu
	}
	return want
}

// sameLaneConfig reports whether have already is want in every field a
// lane sets.
func sameLaneConfig(have, want jetstream.ConsumerConfig) bool {
	return have.Description == want.Description && have.FilterSubject == want.FilterSubject &&
		have.AckPolicy == want.AckPolicy && have.AckWait == want.AckWait &&
		have.MaxAckPending == want.MaxAckPending && have.MaxDeliver == want.MaxDeliver &&
		have.PriorityPolicy == want.PriorityPolicy && slices.Equal(have.PriorityGroups, want.PriorityGroups) &&
		have.PinnedTTL == want.PinnedTTL
}

// pinned reports whether info shows this lane's last pin id as the
// consumer's pinned client.
func (l *lane) pinned(info *jetstream.ConsumerInfo) bool {
	pin := l.pinID()
	if pin == "" || info == nil {
		return false
	}
	for _, g := range info.PriorityGroups {
		if g.Group == topology.LanePriorityGroup && g.PinnedClientID == pin {
			return true
		}
	}
	return false
}

// unpin asks the server to unpin the lane's consumer.
func (l *lane) unpin(ctx context.Context) {
	s, err := l.g.js.Stream(ctx, l.stream)
	if err == nil {
		err = s.UnpinConsumer(ctx, l.name, topology.LanePriorityGroup)
	}
	if err != nil {
		l.log.Info().Err(err).Msg("could not unpin the lane; a peer takes over after pinned_ttl")
		return
	}
	l.log.Debug().Msg("lane unpinned")
}

// release unpins the lane if this process holds its pin (after a clean
// stop, so that a peer takes the lane over at once).
func (l *lane) release(ctx context.Context) {
	if l.cons == nil || l.pinID() == "" {
		return
	}
	info, err := l.cons.Info(ctx)
	if err != nil || !l.pinned(info) {
		return
	}
	l.unpin(ctx)
}

// delivered records what the server told us with m: the pin id (this
// process is pinned) and when.
func (l *lane) delivered(m *Msg, at time.Time) {
	pin := m.Header.Get(headerPinID)
	if pin != "" {
		// Not part of the message: keep it out of outputs and parked copies.
		m.Header.Del(headerPinID)
	}
	m.pin, m.reconnects = pin, l.g.reconnects()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.LastDelivery = at
	if pin != l.stats.PinID && pin != "" {
		// Debug: one per lane at start-up (48 lines for 16 partitions
		// and three stages) is noise at info.
		l.log.Debug().Str("pin", pin).Msg("lane pinned to this process")
	}
	l.stats.PinID = pin
}
