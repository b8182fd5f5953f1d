package lane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
)

// errStopping is returned by open when the lane is being stopped.
var errStopping = errors.New("lane: stopping")

// Headers the runner sets on parked messages.
const (
	HeaderParkStage     = "Sluice-Park-Stage"
	HeaderParkReason    = "Sluice-Park-Reason"
	HeaderParkError     = "Sluice-Park-Error"
	HeaderParkedAt      = "Sluice-Parked-At"
	HeaderOriginStream  = "Sluice-Origin-Stream"
	HeaderOriginSubject = "Sluice-Origin-Subject"
	HeaderOriginSeq     = "Sluice-Origin-Seq"
	HeaderDelivered     = "Sluice-Delivered"
)

// pullBatch is the size of a lane's pull requests. With MaxAckPending=1
// the server delivers one message at a time whatever the batch; a new pull
// request goes out when half of it was used, so a larger batch only means
// fewer pull requests (each one JSON the client encodes and the server
// decodes and queues). 64 against 8, alternating, three runs each on a
// quiet machine: 2.86 against 2.98 simulator units of CPU per event in the
// dispatcher's backlog drain (−4 %), no difference in bench-quick's cells
// (docs/scaling.md).
const pullBatch = 64

type lane struct {
	g      *Group
	p      int
	name   string
	stream string
	filter string
	log    zerolog.Logger

	ctx    context.Context // handler context; cancelled only on a hard stop
	cancel context.CancelFunc

	// Run goroutine only (and Start before it).
	cons        jetstream.Consumer // kept across iterators: it carries the pin id (pin.go)
	created     time.Time          // creation time of the lane's stream, for its fence; written under mu
	fenceKey    string
	synced      uint64 // the connection's reconnect count at the last fence read from the bucket
	wrotePin    string // the pin id of the last synchronous fence write
	lastConsSeq uint64 // of the last message handled (forgotten, pin.go)
	fresh       bool   // the consumer is a new incarnation (forgotten)

	mu       sync.Mutex
	it       jetstream.MessagesContext
	draining map[jetstream.MessagesContext]bool
	stopping bool
	stats    Stats

	// Balancing (balance.go); under mu.
	preferred     bool      // assigned to this replica
	takeoverUntil time.Time // pulling although not assigned here, until then
	active        bool      // an iterator is being consumed
	handingOver   bool      // the iterator was drained to hand the lane over
	wake          chan struct{}
	quit          chan struct{} // closed by stop

	headSeq      uint64
	headFailures int
	headInHand   int // of headFailures, retried in hand (inplace.go)
	headFirst    time.Time
	// headSeen counts the deliveries of headSeq this lane received, and
	// headParked says a copy of it was published (or tried) to the
	// parked stream (publishCopy): with every delivery seen here and no
	// copy, a redelivered message has no parked copy to remove (stale.go).
	headSeen   uint64
	headParked bool
	circ       circuit // StepAside (hold.go); run goroutine only

	hbMu  sync.Mutex
	hb    *time.Timer   // InProgress heartbeat, reused for every message
	hbMsg jetstream.Msg // the message in hand; nil between messages
}

func newLane(g *Group, p int) *lane {
	stream, filter := g.cfg.Names.StageFilter(g.cfg.Stage, p)
	name := g.cfg.Names.ConsumerName(g.cfg.Stage, p)
	ctx, cancel := context.WithCancel(context.Background())
	return &lane{
		g: g, p: p, name: name, stream: stream, filter: filter,
		log:      g.cfg.Logger.With().Str("lane", name).Logger(),
		fenceKey: topology.FenceKey(g.cfg.Stage, p),
		ctx:      ctx,
		cancel:   cancel,
		stats:    Stats{Stage: g.cfg.Stage, Partition: p, Consumer: name},
		draining: map[jetstream.MessagesContext]bool{},
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
	}
}

// reopen is the backoff of a lane whose consumer or iterator cannot be
// opened (the server is unreachable or the consumer was deleted).
var reopen = retry.Policy{Delay: 100 * time.Millisecond, Max: 5 * time.Second}

func (l *lane) run() {
	defer l.cancel()
	failures := 0
	for {
		if l.isStopping() || !l.waitTurn() {
			return
		}
		it, err := l.open()
		if errors.Is(err, errStopping) {
			return
		}
		if err != nil {
			l.setError(err)
			backoff := reopen.Backoff(failures)
			failures++
			l.log.Warn().Err(err).Dur("retry_in", backoff).Msg("lane cannot consume; retrying")
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		failures = 0
		l.consume(it)
		l.handOver()
	}
}

func (l *lane) open() (jetstream.MessagesContext, error) {
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	c, err := l.consumer(ctx)
	if err != nil {
		return nil, err
	}
	// The fence from the bucket, not the watch: another replica may have
	// had the lane until now.
	reconnects := l.g.reconnects()
	if _, err := l.g.fence.read(ctx, l.fenceKey, l.created); err != nil {
		return nil, err
	}
	l.synced = reconnects
	it, err := c.Messages(jetstream.PullMaxMessages(pullBatch), jetstream.PullExpiry(l.g.cfg.PullExpiry),
		jetstream.PullPriorityGroup(topology.LanePriorityGroup))
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		it.Stop()
		return nil, errStopping
	}
	l.it = it
	if l.g.members != nil {
		l.active = true
		if !l.wantPull(time.Now()) {
			// Reassigned while opening: hand over at once.
			l.handingOver = true
			l.draining[it] = true
			it.Drain()
		}
	}
	return it, nil
}

func (l *lane) consume(it jetstream.MessagesContext) {
	for {
		jm, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			l.setError(err)
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				l.quiet(it, err) // pin.go
				continue
			}
			// Anything else: drain (buffered messages are handed back) and
			// let run open a new iterator.
			l.log.Warn().Err(err).Msg("lane iterator error; reopening")
			l.mu.Lock()
			l.draining[it] = true
			l.mu.Unlock()
			it.Drain()
			continue
		}
		l.mu.Lock()
		drop := l.draining[it]
		l.mu.Unlock()
		if drop {
			// Buffered after a stop or restart: hand it back at once.
			_ = jm.Nak()
			continue
		}
		l.handle(jm)
	}
}

func (l *lane) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopping {
		close(l.quit)
	}
	l.stopping = true
	l.poke()
	if l.it != nil {
		l.draining[l.it] = true
		l.it.Drain()
	}
}

func (l *lane) restartIter() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.Restarts++
	if l.it != nil {
		l.draining[l.it] = true
		l.it.Drain()
	}
}

func (l *lane) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

func (l *lane) setError(err error) {
	l.mu.Lock()
	l.stats.LastError, l.stats.LastErrorAt = err.Error(), time.Now()
	l.mu.Unlock()
}

func (l *lane) snapshot() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// pinID is the pin id the last message came with.
func (l *lane) pinID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats.PinID
}

func (l *lane) handle(jm jetstream.Msg) {
	start := time.Now()
	m := &Msg{Subject: jm.Subject(), Data: jm.Data(), Header: jm.Headers(), raw: jm, l: l, received: start}
	var forgotten bool
	if md, err := jm.Metadata(); err == nil {
		m.StreamSeq = md.Sequence.Stream
		m.NumDelivered = md.NumDelivered
		m.Stored = md.Timestamp
		forgotten = l.forgotten(md.Sequence.Consumer) // pin.go
	}
	l.delivered(m, start)
	if l.fencedOnArrival(m) {
		l.skipFenced(m, jm, "arrival")
		return
	}
	if m.StreamSeq == l.headSeq && l.headSeq != 0 {
		m.Failures, m.InHand, m.FirstSeen = l.headFailures, l.headInHand, l.headFirst
		l.headSeen++
	} else {
		l.headSeq, l.headFailures, l.headInHand, l.headFirst = m.StreamSeq, 0, 0, start
		l.headSeen, l.headParked = 1, false
		m.FirstSeen = start
	}
	if forgotten { // one delivery more than this lane's attempts, at least
		m.NumDelivered = max(m.NumDelivered, uint64(m.Failures-m.InHand)+2)
	}

	var o Outcome
	var iso isolation
	p, typ, tok, err := l.g.cfg.Names.SubjectParts(m.Subject)
	switch {
	case err != nil:
		o = Park("unroutable subject", err, nil)
	default:
		m.Partition, m.Type, m.KeyToken = p, typ, tok
		if l.g.parked != nil {
			iso, err = l.gate(m)
		}
		switch {
		case err != nil:
			o = Retry(l.g.cfg.PublishRetry, fmt.Errorf("parked-keys lookup: %w", err))
		case iso.behind:
			o = behindOutcome(iso.pk)
		default:
			o = l.stepAside(m, l.call(m))
			for l.retryHere(m, o) { // a short retry keeps m in hand (inplace.go)
				o = l.stepAside(m, l.call(m))
			}
			// Ask again before the runner's own side effects (outputs, a
			// parked copy, a pause), and honour the handler's answer.
			switch {
			case m.fenced.Load():
				l.skipFenced(m, jm, "handler")
				return
			case o.Kind == KindForward || o.Kind == KindPark || o.Kind == KindPause || o.Kind == KindHold:
				if hit, err := l.isFenced(l.ctx, m); err == nil && hit {
					l.skipFenced(m, jm, "settle")
					return
				}
			}
		}
	}
	if l.settle(m, jm, o, iso, l.beforeAck(m, o)) && iso.replay && !iso.pk.Held && o.Kind != KindPark && o.Kind != KindHold &&
		m.Header.Get(HeaderReplayLast) != "" {
		l.finishReplay(m, iso)
	}
	if obs := l.g.cfg.Observe; obs != nil {
		obs(Observation{Stage: l.g.cfg.Stage, Partition: l.p, Kind: o.Kind, Duration: time.Since(start), Stored: m.Stored, Err: o.Err, Msg: m, Outcome: o})
	}
}

// call runs the handler with InProgress heartbeats, turning a panic into a
// retry (the lane holds; nothing is skipped).
func (l *lane) call(m *Msg) (o Outcome) {
	l.beat(m.raw)
	defer l.beat(nil)
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("handler panic: %v", r)
			l.log.Error().Err(err).Uint64("seq", m.StreamSeq).Msg("handler panicked; holding the lane")
			o = Retry(l.g.cfg.Retry.Backoff(m.Failures), err)
		}
	}()
	return l.g.cfg.Handler(l.ctx, m)
}

// beat starts InProgress heartbeats for jm every AckWait/3, or stops them
// (jm nil). One timer per lane is reused for every message.
func (l *lane) beat(jm jetstream.Msg) {
	l.hbMu.Lock()
	defer l.hbMu.Unlock()
	l.hbMsg = jm
	if jm == nil {
		if l.hb != nil {
			l.hb.Stop()
		}
		return
	}
	every := l.g.cfg.Names.Config().AckWait / 3
	if l.hb == nil {
		l.hb = time.AfterFunc(every, l.heartbeat)
		return
	}
	l.hb.Reset(every)
}

// heartbeat is the timer's function: it tells the server the message in
// hand is still being worked on and re-arms the timer while it is.
func (l *lane) heartbeat() {
	l.hbMu.Lock()
	jm := l.hbMsg
	l.hbMu.Unlock()
	if jm == nil {
		return
	}
	_ = jm.InProgress()
	l.hbMu.Lock()
	if l.hbMsg == jm {
		l.hb.Reset(l.g.cfg.Names.Config().AckWait / 3)
	}
	l.hbMu.Unlock()
}

// event is a log event about message m, with its sequence, type and key;
// the fields are only built when the level is enabled.
func (l *lane) event(e *zerolog.Event, m *Msg) *zerolog.Event {
	return e.Uint64("seq", m.StreamSeq).Str("type", m.Type).Str("key", m.KeyToken)
}

// beforeAck calls Config.BeforeAck for an outcome that acks the message;
// settle calls what it returns just before the ack.
func (l *lane) beforeAck(m *Msg, o Outcome) func(context.Context) error {
	hook := l.g.cfg.BeforeAck
	if hook == nil || (o.Kind != KindDone && o.Kind != KindForward && o.Kind != KindPark) {
		return nil
	}
	return hook(Observation{Stage: l.g.cfg.Stage, Partition: l.p, Kind: o.Kind, Stored: m.Stored, Err: o.Err, Msg: m, Outcome: o})
}

// durable waits for what must be stored before m is acked (the handler's
// Outcome.Durable, the BeforeAck hook's wait); false when something was
// not, after naking m.
func (l *lane) durable(ctx context.Context, m *Msg, jm jetstream.Msg, waits ...func(context.Context) error) bool {
	for _, wait := range waits {
		if wait == nil {
			continue
		}
		if err := wait(ctx); err != nil {
			l.failed(jm, l.g.cfg.PublishRetry, fmt.Errorf("before ack: %w", err))
			l.event(l.log.Warn(), m).Err(err).Msg("a record due before the ack was not stored; holding the lane")
			return false
		}
	}
	return true
}

// settle carries out o and reports whether m was acked; pre (may be nil)
// is waited for before the ack.
func (l *lane) settle(m *Msg, jm jetstream.Msg, o Outcome, iso isolation, pre func(context.Context) error) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o = redactOutcome(o) // its texts reach logs, alerts, parked headers and keys
	switch o.Kind {
	case KindDone, KindForward:
		for _, out := range o.Out {
			if _, err := l.g.js.PublishMsg(ctx, out); err != nil {
				l.failed(jm, l.g.cfg.PublishRetry, fmt.Errorf("publish to %s: %w", out.Subject, err))
				l.event(l.log.Warn(), m).Err(err).Msg("forward publish failed; holding the lane")
				return false
			}
		}
		if !l.durable(ctx, m, jm, o.Durable, pre) {
			return false
		}
		if iso.replay && iso.pk.Held && m.Header.Get(HeaderReplayLast) != "" && !l.finishReplay(m, iso) {
			// A held key is freed before the ack of its round's last
			// message: after a crash in between, or when the bucket did
			// not take the change (a lost KV leader), that message comes
			// back and is simply sent again (hold.go).
			l.failed(jm, l.g.cfg.PublishRetry, errors.New("held key: its retry could not be finished"))
			return false
		}
		l.acked(jm, m)
		l.dropStaleCopies(m)
		return true
	case KindRetry:
		l.failed(jm, o.Delay, o.Err)
		l.event(l.log.Debug(), m).Err(o.Err).Dur("delay", o.Delay).Int("failures", l.headFailures).Msg("retry")
	case KindPause:
		until := time.Now().Add(o.Delay)
		if _, err := l.g.js.PauseConsumer(ctx, l.stream, l.name, until); err != nil {
			l.event(l.log.Warn(), m).Err(err).Msg("pause failed; naking with the pause delay instead")
			l.failed(jm, o.Delay, o.Err)
		} else {
			l.failed(jm, 0, o.Err)
		}
		l.mu.Lock()
		l.stats.Pauses++
		l.mu.Unlock()
		l.event(l.log.Warn(), m).Err(o.Err).Time("until", until).Msg("lane paused")
		l.alert(ctx, "lane_paused", m, o.Reason, until)
		if o.Probe != nil {
			l.probe(o.Probe, until)
		}
	case KindHold:
		return l.hold(ctx, m, jm, o, iso)
	case KindPark:
		copySeq, err := l.publishCopy(ctx, l.parkMsg(m, o))
		if err != nil {
			l.failed(jm, l.g.cfg.PublishRetry, fmt.Errorf("publish parked: %w", err))
			l.event(l.log.Warn(), m).Err(err).Msg("park publish failed; holding the lane")
			return false
		}
		if !l.durable(ctx, m, jm, o.Durable, pre) {
			return false
		}
		if l.g.parked != nil && iso.kvKey != "" && (!o.KeyOpen || iso.replay || iso.behind) {
			if err := l.recordPark(m, o, iso, copySeq); err != nil {
				l.failed(jm, l.g.cfg.PublishRetry, fmt.Errorf("record parked key: %w", err))
				l.event(l.log.Warn(), m).Err(err).Msg("parked-key record failed; holding the lane")
				return false
			}
		}
		l.mu.Lock()
		l.stats.Parked++
		l.mu.Unlock()
		if iso.behind && iso.pk != nil && iso.pk.Draining != "" && l.g.holder != nil &&
			m.Header.Get(HeaderReplay) == iso.pk.Draining && m.Header.Get(HeaderReplayLast) != "" {
			l.g.holder.schedule(iso.kvKey, iso.pk.RetryAt)
		}
		switch {
		case iso.behind && iso.pk != nil && iso.pk.Held:
			// A key retrying by itself: routine under a flaky CRM (the chaos
			// suite's 30 % 5xx logged 72,320 of these for 100,000 events);
			// sluice status counts held keys.
			l.event(l.log.Debug(), m).Str("reason", o.Reason).Msg("event parked behind its held key")
		case iso.behind:
			l.event(l.log.Info(), m).Str("reason", o.Reason).Msg("event parked behind its key")
		default:
			l.event(l.log.Warn(), m).Str("reason", o.Reason).Err(o.Err).Msg("event parked")
			l.alert(ctx, "parked", m, o.Reason, time.Time{})
		}
		l.acked(jm, m)
		return true
	}
	return false
}

func (l *lane) acked(jm jetstream.Msg, m *Msg) {
	l.applied(m)
	if err := jm.Ack(); err != nil {
		// The server will redeliver after AckWait; outputs carry
		// Nats-Msg-Id, so the repeat is deduplicated downstream.
		l.log.Warn().Err(err).Uint64("seq", m.StreamSeq).Msg("ack failed")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.Settled++
	l.stats.Acked++
	l.stats.LastAck = time.Now()
	l.stats.LastSeq = m.StreamSeq
	l.headFailures, l.headInHand = 0, 0
}

func (l *lane) failed(jm jetstream.Msg, delay time.Duration, err error) {
	var nerr error
	if delay > 0 {
		nerr = jm.NakWithDelay(delay)
	} else {
		nerr = jm.Nak()
	}
	if nerr != nil {
		l.log.Warn().Err(nerr).Msg("nak failed; the server redelivers after AckWait")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.Settled++
	l.countRetry(err)
}

// countRetry counts one failed attempt at the head (a nak, or a retry in
// hand); under mu.
func (l *lane) countRetry(err error) {
	l.headFailures++
	l.stats.Retries++
	if err != nil {
		l.stats.LastError, l.stats.LastErrorAt = err.Error(), time.Now()
	}
}

// publishCopy stores pm, the parked or held copy of the message in hand,
// and returns its sequence in the parked stream. The head counts as parked
// even when the publish fails: the stream may have stored the copy before
// the connection dropped (stale.go).
func (l *lane) publishCopy(ctx context.Context, pm *nats.Msg) (uint64, error) {
	l.headParked = true
	ack, err := l.g.js.PublishMsg(ctx, pm)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func (l *lane) parkMsg(m *Msg, o Outcome) *nats.Msg {
	t, tok := m.Type, m.KeyToken
	if t == "" {
		t, tok = "_", "_"
	}
	pm := nats.NewMsg(l.g.cfg.Names.ParkedSubject(l.g.cfg.Stage, t, tok))
	pm.Data = m.Data
	for k, v := range m.Header {
		pm.Header[k] = v
	}
	for k, v := range o.Header {
		pm.Header[k] = v
	}
	id := m.Header.Get(nats.MsgIdHdr)
	if id == "" {
		id = l.stream + ":" + strconv.FormatUint(m.StreamSeq, 10)
	}
	pm.Header.Set(nats.MsgIdHdr, "park:"+string(l.g.cfg.Stage)+":"+id)
	if pm.Header.Get(HeaderOrder) == "" {
		pm.Header.Set(HeaderOrder, strconv.FormatUint(m.StreamSeq, 10))
	}
	pm.Header.Set(HeaderParkStage, string(l.g.cfg.Stage))
	pm.Header.Set(HeaderParkReason, o.Reason)
	if o.Err != nil {
		pm.Header.Set(HeaderParkError, o.Err.Error())
	}
	pm.Header.Set(HeaderParkedAt, time.Now().UTC().Format(time.RFC3339Nano))
	pm.Header.Set(HeaderOriginStream, l.stream)
	pm.Header.Set(HeaderOriginSubject, m.Subject)
	pm.Header.Set(HeaderOriginSeq, strconv.FormatUint(m.StreamSeq, 10))
	pm.Header.Set(HeaderDelivered, strconv.FormatUint(m.NumDelivered, 10))
	return pm
}
