// Package dispatcher is Sluice's outlet to the CRM: one ordered lane per
// partition of the dispatch stream sends each crmreq.Request over HTTP,
// retries failures, pauses the partition's consumer on the server when the
// CRM keeps failing, parks requests it cannot send, and remembers the CRM
// ids of created records in a KV bucket for later updates.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/conn"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
	"sluice.dev/mesh/version"
)

// ServiceName is the micro service name ($SRV.PING|INFO|STATS.sluice-dispatcher).
const ServiceName = "sluice-dispatcher"

// Version is the micro service version: Sluice's one version (mesh/version).
var Version = version.String()

// Deps are the dispatcher's collaborators.
type Deps struct {
	// NC carries the micro service. Required.
	NC *nats.Conn
	// JS runs the lanes and the CRM id bucket. Required.
	JS jetstream.JetStream
	// Names is the topology.
	Names topology.Names
	// Logger receives the dispatcher's and its lanes' logs. Header values
	// and request bodies are never logged.
	Logger zerolog.Logger
	// HTTPClient sends the CRM requests. Optional: by default a client with
	// one shared keep-alive transport that does not follow redirects.
	HTTPClient *http.Client
	// Partitions lists the partitions this process runs. Optional: all.
	Partitions []int
	// Observe, if set, is called after each lane message is settled
	// (metrics.Metrics.Observe).
	Observe func(lane.Observation)
	// Middleware wraps the lane handler, outermost first. Optional.
	Middleware []lane.Middleware
	// OnDelivered, if set, is called with the produce→CRM latency of each
	// request the CRM accepted (metrics.Metrics.ObserveProduceToCRM).
	OnDelivered func(time.Duration)
	// Ledger, if set, records each delivery (before its ack) and each park
	// in the delivery ledger. It must publish on JS's connection
	// (ledger.NewWriter(JS.Conn(), ...)), so a record always reaches the
	// server before the ack; New refuses another. The lanes wait for each
	// record before they ack its message. Stop flushes and closes it.
	Ledger *ledger.Writer
}

// Service is a running dispatcher.
type Service struct {
	cfg     Config
	deps    Deps
	log     zerolog.Logger
	crm     *crmClient
	ids     *idStore
	jq      jqCache
	metrics metrics

	// crm.find and adoption (find.go)
	uncertain                               uncertainSet
	finds, found, adopted, adoptedConflicts atomic.Uint64

	mu      sync.Mutex
	group   *lane.Group
	svc     micro.Service
	crash   chan error // Done
	unwatch func()
}

// New validates cfg (after defaults) and deps and returns a stopped Service.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.JS == nil {
		return nil, errors.New("dispatcher: Deps.NC and Deps.JS are required")
	}
	if err := deps.Names.Config().Validate(); err != nil {
		return nil, fmt.Errorf("dispatcher: Deps.Names: %w", err)
	}
	if deps.Ledger != nil && deps.Ledger.Conn() != deps.JS.Conn() {
		return nil, fmt.Errorf("dispatcher: Deps.Ledger: %w", ledger.ErrWrongConn)
	}
	if len(deps.Partitions) == 0 {
		for p := 0; p < deps.Names.Partitions(); p++ {
			deps.Partitions = append(deps.Partitions, p)
		}
	}
	for _, p := range deps.Partitions {
		if p < 0 || p >= deps.Names.Partitions() {
			return nil, fmt.Errorf("dispatcher: Deps.Partitions: %d out of range 0..%d", p, deps.Names.Partitions()-1)
		}
	}
	idle := cfg.CRM.MaxIdleConnsPerHost
	if idle == 0 {
		idle = len(deps.Partitions) + 4
	}
	log := deps.Logger.With().Str("service", "dispatcher").Logger()
	return &Service{
		cfg:  cfg,
		deps: deps,
		log:  log,
		crm:  newCRMClient(cfg.CRM, deps.HTTPClient, idle),
		ids:  &idStore{js: deps.JS, bucket: deps.Names.CRMIDBucket()},
	}, nil
}

// Start opens the CRM id bucket, starts one lane per partition and
// registers the micro service with its status endpoint. On error,
// everything started is stopped again.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group != nil {
		return errors.New("dispatcher: already started")
	}
	if _, err := s.ids.open(ctx); err != nil {
		return err
	}
	g, err := lane.NewGroup(s.deps.JS, lane.Config{
		Stage:       topology.StageDispatcher,
		IsolateKeys: true, // a parked key's later requests park behind it
		StepAside:   s.cfg.StepAside.lane(),
		ProbeEvery:  s.cfg.StepAside.ProbeEvery,
		Names:       s.deps.Names,
		Handler:     lane.Chain(s.Handler(), s.deps.Middleware...),
		Partitions:  s.deps.Partitions,
		Logger:      s.log,
		Observe:     s.deps.Observe,
		BeforeAck:   s.recordParks(),
	})
	if err != nil {
		return err
	}
	if err := g.Start(ctx); err != nil {
		_ = g.Stop(ctx)
		return err
	}
	svc, err := micro.AddService(s.deps.NC, micro.Config{
		Name:         ServiceName,
		Version:      Version,
		Description:  "Sluice dispatcher: sends CRM requests in order per key",
		StatsHandler: func(*micro.Endpoint) any { return s.Stats() },
	})
	if err == nil {
		err = svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) {
			_ = r.RespondJSON(s.Stats())
		}), micro.WithEndpointSubject(s.StatusSubject()))
		if err != nil {
			_ = svc.Stop()
		}
	}
	if err != nil {
		_ = g.Stop(ctx)
		return fmt.Errorf("dispatcher: micro service: %w", err)
	}
	s.group, s.svc = g, svc
	s.crash = make(chan error, 1)
	s.unwatch = conn.WatchClosed(s.deps.NC, s.crash, "dispatcher")
	s.log.Info().Ints("partitions", s.deps.Partitions).Str("crm", s.crm.base).Msg("dispatcher started")
	return nil
}

// StatusSubject is the request subject of the status endpoint:
// <prefix>.dispatcher.status.
func (s *Service) StatusSubject() string {
	return s.deps.Names.Config().Prefix + ".dispatcher.status"
}

// Stop stops the lanes after their current requests are settled (ctx
// bounds the wait; then in-flight requests are cancelled and their messages
// redelivered later), deregisters the micro service and closes idle CRM
// connections.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	g, svc, unwatch := s.group, s.svc, s.unwatch
	s.group, s.svc, s.unwatch = nil, nil, nil
	s.mu.Unlock()
	if g == nil {
		return ErrNotStarted
	}
	unwatch()
	err := g.Stop(ctx)
	if svc != nil {
		err = errors.Join(err, svc.Stop())
	}
	s.crm.close()
	if ferr := s.deps.Ledger.Close(ctx); ferr != nil {
		s.log.Warn().Err(ferr).Msg("ledger records not all acknowledged at stop")
	}
	return err
}

// Stats returns the dispatcher's progress.
func (s *Service) Stats() Stats {
	st := s.metrics.snapshot()
	st.Finds, st.Found, st.Adopted, st.AdoptedConflicts = s.finds.Load(), s.found.Load(), s.adopted.Load(), s.adoptedConflicts.Load()
	if tc, ok := s.crm.auth.(*tokenCache); ok {
		st.TokenFetches, st.Unauthorized = tc.fetches.Load(), tc.rejects.Load()
	}
	if l := s.crm.lim; l != nil {
		st.Throttled, st.Rate = l.throttled.Load(), l.rate()
	}
	s.mu.Lock()
	g := s.group
	s.mu.Unlock()
	if g != nil {
		st.Lanes = g.Stats()
	}
	return st
}

// Delivered counts requests the CRM accepted since New.
func (s *Service) Delivered() uint64 { return s.metrics.delivered.Load() }

// Restart drops partition p's consume loop and starts a new one (the
// watchdog asks for it over the control subject when a lane stalls). The
// message in hand is settled first.
func (s *Service) Restart(p int) error {
	s.mu.Lock()
	g := s.group
	s.mu.Unlock()
	if g == nil {
		return ErrNotStarted
	}
	return g.Restart(p)
}

// Done delivers an error when the running service died on its own: its
// NATS connection closed for good. A supervisor
// (watchdog.Crasher) stops and restarts it. It is nil before Start.
func (s *Service) Done() <-chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crash
}
