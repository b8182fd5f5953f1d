package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// backlogRecheck is how long an inline lane waits before it looks again
// at what was left from before the switch.
const backlogRecheck = time.Second

// Outlet is the dispatcher run inside another stage's lanes
// (Config.Inline): the enricher hands each request it has just mapped to
// Deliver, in the lane that holds the event, and the lane settles the
// Outcome as the dispatcher's own lanes would (retry, pause with a probe,
// step aside, park, and the ledger records before the ack). It saves the
// dispatch stream's store, delivery, ack and removal per event.
//
// Deps.NC, JS and Ledger must be the connection of the lanes that call
// Deliver, so that a ledger record always reaches the server before the
// lane's ack. An Outlet runs no lanes and no micro service of its own.
type Outlet struct {
	s *Service

	mu sync.Mutex
	// clear marks the partitions with nothing left from before the
	// switch; warned rate-limits the log line of a waiting partition.
	clear  map[int]bool
	warned map[int]time.Time
	// waits counts the retries for ErrDispatchBacklog.
	waits atomic.Uint64
}

// NewOutlet validates cfg (after defaults) like New and returns an Outlet
// to Open.
func NewOutlet(cfg Config, deps Deps) (*Outlet, error) {
	s, err := New(cfg, deps)
	if err != nil {
		return nil, err
	}
	s.inline = true
	return &Outlet{s: s, clear: map[int]bool{}, warned: map[int]time.Time{}}, nil
}

// Open opens what Deliver needs (the CRM id bucket and its cache); the
// stage that runs the lanes calls it when it starts, before its lanes.
func (o *Outlet) Open(ctx context.Context) error { return o.s.ids.startCache(ctx, o.s.log) }

// Close stops the id cache and closes idle CRM connections; the stage
// calls it after its lanes stopped.
func (o *Outlet) Close() {
	o.s.ids.stopCache()
	o.s.crm.close()
}

// Lane configures the lanes that call Deliver as the dispatcher's own:
// step-aside and its probes.
func (o *Outlet) Lane(c *lane.Config) {
	c.StepAside, c.ProbeEvery = o.s.cfg.StepAside.lane(), o.s.cfg.StepAside.ProbeEvery
}

// BeforeAck is the lanes' BeforeAck hook: the ledger record of each park,
// with the CRM's status when it answered. Nil without a ledger.
func (o *Outlet) BeforeAck() func(lane.Observation) func(context.Context) error {
	return o.s.recordParks()
}

// Deliver sends r, the request mapped from m. Until the dispatch stream
// has no request of m's partition and no key of it is held or parked at
// the dispatcher (what was left from before the switch), it retries
// (ErrDispatchBacklog), so no event overtakes an older one of its key.
func (o *Outlet) Deliver(ctx context.Context, m *lane.Msg, r crmreq.Request) lane.Outcome {
	if !o.isClear(m.Partition) {
		why, err := o.backlog(ctx, m.Partition)
		switch {
		case err != nil:
			return lane.Retry(backlogRecheck, fmt.Errorf("inline outlet: %w", err))
		case why != "":
			o.waits.Add(1)
			o.warn(m.Partition, why)
			return lane.Retry(backlogRecheck, fmt.Errorf("%w: %s", ErrDispatchBacklog, why))
		}
		o.setClear(m.Partition)
	}
	return o.s.deliver(ctx, m, r)
}

// Stats is the outlet's delivery counters (its lanes are the caller's).
func (o *Outlet) Stats() Stats { return o.s.Stats() }

// BacklogWaits counts the times a lane waited for what was queued before
// the switch (ErrDispatchBacklog).
func (o *Outlet) BacklogWaits() uint64 { return o.waits.Load() }

// Delivered counts requests the CRM accepted through this outlet.
func (o *Outlet) Delivered() uint64 { return o.s.Delivered() }

func (o *Outlet) isClear(p int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.clear[p]
}

func (o *Outlet) setClear(p int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clear[p] = true
}

func (o *Outlet) warn(p int, why string) {
	o.mu.Lock()
	last := o.warned[p]
	if time.Since(last) < 30*time.Second {
		o.mu.Unlock()
		return
	}
	o.warned[p] = time.Now()
	o.mu.Unlock()
	o.s.log.Warn().Int("partition", p).Str("waiting_for", why).
		Msg("inline delivery waits until the dispatcher has sent what was queued before dispatcher.inline (sluice parked list; nats stream info)")
}

// backlog says what of partition p is left from before the switch ("" if
// nothing).
func (o *Outlet) backlog(ctx context.Context, p int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	n := o.s.deps.Names
	stream, filter := n.StageFilter(topology.StageDispatcher, p)
	st, err := o.s.deps.JS.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return "", err
	default:
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			return "", err
		}
		left := uint64(0)
		for _, c := range info.State.Subjects {
			left += c
		}
		if left > 0 {
			return fmt.Sprintf("%d request(s) in stream %s (%s)", left, stream, filter), nil
		}
	}
	adm, err := lane.OpenParked(ctx, o.s.deps.JS, n)
	if err != nil {
		return "", err
	}
	keys, err := adm.List(ctx)
	if err != nil {
		return "", err
	}
	for _, k := range keys {
		if k.Stage == topology.StageDispatcher && topology.PartitionOfToken(k.KeyToken, n.Partitions()) == p {
			state := "parked"
			if k.Held {
				state = "held for a retry"
			}
			return fmt.Sprintf("a key %s at the dispatcher (type %s, token %s)", state, k.Type, k.KeyToken), nil
		}
	}
	return "", nil
}
