package lane

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
)

// JetStream is the part of jetstream.JetStream the runner uses.
type JetStream interface {
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
	CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
	PauseConsumer(ctx context.Context, stream, consumer string, until time.Time) (*jetstream.ConsumerPauseResponse, error)
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	// Stream is used to read the stream's creation time (the fence's
	// incarnation) and to unpin a lane on Stop.
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	// CreateOrUpdateKeyValue opens the fence bucket (and the parked-keys
	// bucket with IsolateKeys).
	CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// Config configures a Group of lanes of one stage.
type Config struct {
	// Stage names the lanes ("enricher", "dispatcher").
	Stage topology.Stage
	// Names is the topology; the stage's stream and filters come from it.
	Names topology.Names
	// Handler processes each message.
	Handler Handler
	// Partitions lists the partitions this group runs. Default: all.
	Partitions []int
	// Logger receives lane events.
	Logger zerolog.Logger
	// Retry is the stage's retry policy; the runner's own retries (a
	// panicking handler) back off by it. Zero fields: the stage's
	// registered policy (topology.StageSpec.Retry).
	Retry retry.Policy
	// PublishRetry is the nak delay when publishing an output or a parked
	// message fails (JetStream unavailable). Default 1s.
	PublishRetry time.Duration
	// PullExpiry is the pull request expiry; a stalled pull is noticed
	// after about twice this. Each pull also renews the lane's pin, so it
	// must be at most half the topology's PinnedTTL. Default 5s, or
	// PinnedTTL/3 when that is shorter, but at least 1s (the client's
	// minimum).
	PullExpiry time.Duration
	// Observe, if set, is called after each message is settled. It is not
	// called for a late duplicate the lane skipped (Stats.Fenced): the
	// replica that applied the message observed it.
	Observe func(stats Observation)
	// BeforeAck, if set, is called when the runner is about to ack a
	// message (KindDone, KindForward, KindPark), before it publishes the
	// outputs or the parked copy; the function it returns (if not nil) is
	// called just before the ack, and an error holds the lane like a failed
	// publish. The delivery ledger writes its park records here, so that
	// they are stored before the ack while their round trip overlaps the
	// runner's publishes. The Observation has no Duration yet.
	BeforeAck func(o Observation) func(context.Context) error
	// IsolateKeys turns on per-key poison isolation: once an event of key K
	// is parked, every later event of K at this stage is parked behind it
	// (see isolate.go) until an operator replays or discards K. The state
	// lives in the parked-keys KV bucket; the JetStream must support
	// key-value (a jetstream.JetStream does). Default false.
	IsolateKeys bool
	// StepAside turns on per-key retry holds (hold.go): a failure the
	// handler marks as possibly the message's own (Outcome.StepAside) holds
	// its key, not the partition, while the partition's circuit is closed.
	// Needs IsolateKeys. Default off.
	StepAside StepAside
	// ProbeEvery is how often a paused lane tries its Outcome.Probe.
	// Default 1s.
	ProbeEvery time.Duration
	// Balance spreads the stage's lanes over its live replicas (groups of
	// the same stage, in any process): each pulls only the lanes assigned to
	// it, about N/k with k replicas, and takes over a lane no replica pulls
	// (balance.go). Off, every group pulls every lane and the first one
	// pinned keeps it. Default: topology.balance_replicas (false).
	Balance bool
}

// Observation describes one settled message, for metrics and progress.
type Observation struct {
	Stage     topology.Stage
	Partition int
	Kind      Kind
	Duration  time.Duration
	Stored    time.Time
	Err       error
	// Msg is the settled message (subject, headers, stream sequence); it
	// must not be kept or changed after Observe returns.
	Msg *Msg
	// Outcome is what the handler (or the runner) decided; Outcome.Out holds
	// the forwarded messages, Outcome.Reason the park reason.
	Outcome Outcome
}

func (c Config) withDefaults() Config {
	if len(c.Partitions) == 0 {
		for p := 0; p < c.Names.Partitions(); p++ {
			c.Partitions = append(c.Partitions, p)
		}
	}
	c.Balance = c.Balance || c.Names.Config().BalanceReplicas
	if st, ok := topology.SpecOf(c.Stage); ok {
		c.Retry = c.Retry.WithDefaults(st.Retry)
	}
	if c.PublishRetry == 0 {
		c.PublishRetry = time.Second
	}
	if c.StepAside.Enabled {
		c.StepAside = c.StepAside.withDefaults()
	}
	if c.ProbeEvery == 0 {
		c.ProbeEvery = time.Second
	}
	if c.PullExpiry == 0 {
		c.PullExpiry = max(time.Second, min(5*time.Second, c.Names.Config().PinnedTTL/3))
	}
	return c
}

func (c Config) validate() error {
	if c.Stage == "" {
		return errors.New("lane: Stage is required")
	}
	if c.Handler == nil {
		return errors.New("lane: Handler is required")
	}
	if err := c.StepAside.validate(c.IsolateKeys); err != nil {
		return err
	}
	if s, _ := c.Names.StageFilter(c.Stage, 0); s == "" {
		return fmt.Errorf("lane: stage %q has no stream in the topology", c.Stage)
	}
	if ttl := c.Names.Config().PinnedTTL; c.PullExpiry > ttl/2 {
		return fmt.Errorf("lane: PullExpiry %s must be at most half of topology.pinned_ttl (%s), or the lane loses its pin between pulls", c.PullExpiry, ttl)
	}
	for _, p := range c.Partitions {
		if p < 0 || p >= c.Names.Partitions() {
			return fmt.Errorf("lane: partition %d out of range", p)
		}
	}
	return nil
}

// Group runs the lanes of one stage.
type Group struct {
	cfg   Config
	js    JetStream
	mu    sync.Mutex
	lanes map[int]*lane
	wg    sync.WaitGroup
	// parked is the parked-keys view when IsolateKeys is on.
	parked *parkedSet
	// holder replays held keys with StepAside; set by Start.
	holder *holder
	// fence is the stage's lane fences (fence.go); set by Start.
	fence *fenceSet
	// nc is the connection under js, if js exposes it (for its reconnect
	// count); nil otherwise.
	nc *nats.Conn
	// members is the stage's member view with Balance; set by Start before
	// the lanes run, cleared by Stop after they ended.
	members *memberSet
}

// NewGroup validates cfg and returns a stopped Group.
func NewGroup(js JetStream, cfg Config) (*Group, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &Group{cfg: cfg, js: js, lanes: map[int]*lane{}}
	if c, ok := js.(interface{ Conn() *nats.Conn }); ok {
		g.nc = c.Conn()
	}
	return g, nil
}

// reconnects is the connection's reconnect count (0 when unknown).
func (g *Group) reconnects() uint64 {
	if g.nc == nil {
		return 0
	}
	return g.nc.Stats().Reconnects
}

// Start creates each lane's consumer and starts consuming. It returns the
// first consumer-creation error; lanes that started keep running (call Stop).
func (g *Group) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cfg.IsolateKeys && g.parked == nil {
		ps, err := openParkedSet(ctx, g.js, g.cfg.Names, g.cfg.Stage)
		if err != nil {
			return err
		}
		g.parked = ps
	}
	if g.cfg.StepAside.Enabled && g.holder == nil {
		g.holder = newHolder(g)
		g.parked.mu.Lock()
		g.parked.onPut = g.holder.observeHeld
		g.parked.mu.Unlock()
		if err := g.holder.scan(ctx); err != nil {
			return err
		}
	}
	if g.fence == nil {
		fs, err := openFenceSet(ctx, g.js, g.cfg.Names, g.cfg.Stage, g.cfg.Logger)
		if err != nil {
			return err
		}
		g.fence = fs
	}
	var owner map[int]string
	if g.cfg.Balance && g.members == nil {
		ms, err := openMemberSet(ctx, g)
		if err != nil {
			return err
		}
		g.members = ms
		owner = assignLanes(g.cfg.Stage, g.cfg.Names.Partitions(), ms.live(time.Now()))
	}
	for _, p := range g.cfg.Partitions {
		l := newLane(g, p)
		if _, err := l.consumer(ctx); err != nil {
			return fmt.Errorf("lane %s: %w", l.name, err)
		}
		if g.members != nil {
			l.preferred = owner[p] == g.members.id
		}
		g.lanes[p] = l
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			// The stage label lets a CPU profile split the process's time
			// by stage (`go tool pprof -tags`; the benchmark prints it).
			pprof.Do(context.Background(), pprof.Labels("stage", string(g.cfg.Stage)), func(context.Context) { l.run() })
		}()
	}
	return nil
}

// Stop stops every lane after its current message is settled; messages
// already buffered are nak'd so they are redelivered at once to the next
// consumer. If ctx ends first, handlers are cancelled.
func (g *Group) Stop(ctx context.Context) error {
	g.mu.Lock()
	ms := g.members
	g.mu.Unlock()
	if ms != nil {
		// Leave first: peers start pulling the lanes assigned to them now
		// and are pinned as soon as this group lets the pins go below.
		ms.leave(ctx)
	}
	g.mu.Lock()
	for _, l := range g.lanes {
		l.stop()
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		g.mu.Lock()
		if g.fence != nil {
			// Last fences first, then let the pins go, so that a peer takes
			// over at once and from the right place. Skipped on a hard stop.
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			g.fence.shutdown(rctx)
			if rctx.Err() == nil {
				for _, l := range g.lanes {
					l.release(rctx)
				}
			}
			cancel()
			g.fence = nil
		}
		if g.holder != nil {
			g.holder.stop()
			g.holder = nil
		}
		if g.parked != nil {
			g.parked.stop()
			g.parked = nil
		}
		g.members = nil
		g.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// Hard stop: cancel handlers and close iterators outright (a drain
		// waits for a server that may be gone). Unsettled messages come back
		// after AckWait.
		g.mu.Lock()
		for _, l := range g.lanes {
			l.cancel()
			l.mu.Lock()
			if l.it != nil {
				l.it.Stop()
			}
			l.mu.Unlock()
		}
		g.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Restart drops partition p's consume loop and starts a new one (used by
// the watchdog when a lane stalls). The message in hand, if any, is settled
// first.
func (g *Group) Restart(p int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	l, ok := g.lanes[p]
	if !ok {
		return fmt.Errorf("lane: partition %d is not run here", p)
	}
	l.restartIter()
	return nil
}

// Stats returns a snapshot of every lane, in partition order.
func (g *Group) Stats() []Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Stats, 0, len(g.lanes))
	for _, p := range g.cfg.Partitions {
		if l, ok := g.lanes[p]; ok {
			st := l.snapshot()
			if g.fence != nil {
				l.mu.Lock()
				created := l.created
				l.mu.Unlock()
				st.Fence = g.fence.current(l.fenceKey, created)
			}
			out = append(out, st)
		}
	}
	return out
}

// Stats describes one lane as its runner sees it.
type Stats struct {
	Stage     topology.Stage `json:"stage"`
	Partition int            `json:"partition"`
	Consumer  string         `json:"consumer"`
	Settled   uint64         `json:"settled"`
	Acked     uint64         `json:"acked"`
	Retries   uint64         `json:"retries"`
	Pauses    uint64         `json:"pauses"`
	Parked    uint64         `json:"parked"`
	// Held counts messages that stepped aside for a retry (StepAside).
	Held uint64 `json:"held,omitempty"`
	// CircuitOpen is true while failures in a row hold the lane instead of
	// stepping aside (StepAside).
	CircuitOpen bool `json:"circuit_open,omitempty"`
	// Probes counts probe tries while paused; ProbeResumes the pauses a
	// successful probe ended early.
	Probes       uint64    `json:"probes,omitempty"`
	ProbeResumes uint64    `json:"probe_resumes,omitempty"`
	LastAck      time.Time `json:"last_ack,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	// LastErrorAt is when LastError happened; a LastAck after it means the
	// lane recovered.
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastSeq     uint64    `json:"last_seq"`
	Restarts    uint64    `json:"restarts"`
	// Fenced counts late duplicates skipped: messages at or below the
	// lane's fence, already applied by another replica (or by this one
	// before a lost ack). See fence.go.
	Fenced uint64 `json:"fenced"`
	// Swept counts acked messages a crash left in a work-queue stream,
	// removed when the lane opened its consumer (sweep.go).
	Swept uint64 `json:"swept,omitempty"`
	// StaleCopies counts parked copies of delivered messages removed from
	// the parked stream (stale.go).
	StaleCopies uint64 `json:"stale_copies,omitempty"`
	// StaleChecks counts the looks for such copies (each reads the key's
	// parked messages): redeliveries this process did not see all of, or
	// that it parked once.
	StaleChecks uint64 `json:"stale_checks,omitempty"`
	// Fence is the lane's fence as this process last saw it.
	Fence uint64 `json:"fence"`
	// PinID is the pin id the last message came with: this process was
	// pinned to the lane then. It still is if `nats consumer info` shows
	// the same id as the priority group's pinned client.
	PinID string `json:"pin_id,omitempty"`
	// LastDelivery is when the last message arrived; a lane another
	// replica is pinned to gets none.
	LastDelivery time.Time `json:"last_delivery,omitzero"`
	// MissedHeartbeats counts pulls that went quiet (the server's idle
	// heartbeats stopped); each is followed by a new pull.
	MissedHeartbeats uint64 `json:"missed_heartbeats"`
	// Standby is true while the lane is assigned to another replica and
	// does not pull (Config.Balance).
	Standby bool `json:"standby,omitempty"`
	// Takeovers counts the times this standby lane found messages waiting
	// and no replica pulling, and pulled (Config.Balance).
	Takeovers uint64 `json:"takeovers,omitempty"`
}
