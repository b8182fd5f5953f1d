// Package dispatcher is Sluice's outlet to the CRM: one ordered lane per
// partition of the dispatch stream sends each crmreq.Request over HTTP,
// retries failures, pauses the partition's consumer on the server when the
// CRM keeps failing, parks requests it cannot send, and remembers the CRM
// ids of created records in a KV bucket for later updates.
package dispatcher

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/service"
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

// Service is the dispatcher: its handler in the service shell (Start,
// Stop, Restart, Done come from service.Shell).
type Service struct {
	*service.Shell[*Service]
	cfg     Config
	deps    Deps
	log     zerolog.Logger
	crm     *crmClient
	ids     *idStore
	jq      jqCache
	metrics metrics
	inline  bool // an Outlet's: runs in the enricher's lanes

	// crm.find and adoption (find.go)
	uncertain                               uncertainSet
	finds, found, adopted, adoptedConflicts atomic.Uint64

	// a paused lane's probe answered 2xx (probed.go)
	probed           probeAnswers
	probeAnswersUsed atomic.Uint64
}

// New validates cfg (after defaults) and deps and returns a stopped Service.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	idle := cfg.CRM.MaxIdleConnsPerHost
	if idle == 0 {
		idle = len(deps.Partitions) + 4
		if len(deps.Partitions) == 0 {
			idle = deps.Names.Partitions() + 4
		}
	}
	s := &Service{cfg: cfg, deps: deps, crm: newCRMClient(cfg.CRM, deps.HTTPClient, idle),
		ids: &idStore{js: deps.JS, bucket: deps.Names.CRMIDBucket()}}
	var err error
	s.Shell, err = service.New(s, service.Spec{
		Name: ServiceName, Short: "dispatcher", Stage: topology.StageDispatcher,
		Description: "Sluice dispatcher: sends CRM requests in order per key",
		Partitions:  deps.Partitions, Middleware: deps.Middleware, Observe: deps.Observe,
		BeforeAck: s.recordParks(),
		Lane:      func(c *lane.Config) { c.StepAside, c.ProbeEvery = cfg.StepAside.lane(), cfg.StepAside.ProbeEvery },
		Retry:     cfg.retryPolicy(), Stats: func() any { return s.Stats() },
		Prepare: func(ctx context.Context) error { return s.ids.startCache(ctx, s.log) },
		Stopped: func(context.Context) error { s.ids.stopCache(); s.crm.close(); return nil },
		Started: func(e *zerolog.Event) *zerolog.Event { return e.Str("crm", s.crm.base) },
	}, service.Deps{NC: deps.NC, JS: deps.JS, Names: deps.Names, Logger: deps.Logger, Ledger: deps.Ledger})
	if err != nil {
		return nil, err
	}
	s.log = s.Log()
	return s, nil
}

// Handle is the lane handler the shell runs.
func (s *Service) Handle(ctx context.Context, m *lane.Msg) lane.Outcome { return s.handle(ctx, m) }

// Stats returns the dispatcher's progress.
func (s *Service) Stats() Stats {
	st := s.metrics.snapshot()
	st.Finds, st.Found, st.Adopted, st.AdoptedConflicts = s.finds.Load(), s.found.Load(), s.adopted.Load(), s.adoptedConflicts.Load()
	st.ProbeAnswers = s.probeAnswersUsed.Load()
	if tc, ok := s.crm.auth.(*tokenCache); ok {
		st.TokenFetches, st.Unauthorized = tc.fetches.Load(), tc.rejects.Load()
	}
	if l := s.crm.lim; l != nil {
		st.Throttled, st.Rate = l.throttled.Load(), l.rate()
	}
	st.Lanes = s.LaneStats()
	return st
}

// Delivered counts requests the CRM accepted since New.
func (s *Service) Delivered() uint64 { return s.metrics.delivered.Load() }
