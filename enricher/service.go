package enricher

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/conn"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
	"sluice.dev/mesh/version"
)

// Service identity on the micro API ($SRV.PING|INFO|STATS.sluice-enricher).
const ServiceName = "sluice-enricher"

// ServiceVersion is Sluice's one version (mesh/version).
var ServiceVersion = version.String()

// Deps are what the enricher runs on. NC, JS, Catalog and DB are required.
type Deps struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Names   topology.Names
	Catalog *catalog.Catalog
	// DB is the product database; the caller opens (productdb.Open) and
	// closes it.
	DB *sql.DB
	// Dialect of DB. Zero: derived from Config.DB.Driver.
	Dialect productdb.Dialect
	Logger  zerolog.Logger
	// Partitions this instance runs. Empty: all.
	Partitions []int
	// Observe, if set, is called after each lane message is settled
	// (metrics.Metrics.Observe).
	Observe func(lane.Observation)
	// Ledger, if set, records each forwarded event (before its ack) and
	// each park in the delivery ledger. It must publish on JS's connection
	// (ledger.NewWriter(JS.Conn(), ...)), so a record always reaches the
	// server before the ack; New refuses another. The lanes wait for each
	// record before they ack its message. Stop flushes and closes it.
	Ledger *ledger.Writer
}

// Service is the enricher.
type Service struct {
	cfg   Config
	deps  Deps
	log   zerolog.Logger
	types map[string]*mapping
	cache *expirable.LRU[string, map[string]any] // nil: disabled

	hits, misses atomic.Uint64

	mu      sync.Mutex
	group   *lane.Group
	svc     micro.Service
	crash   chan error // Done
	unwatch func()
}

// Stats is the enricher's state: its lanes and its cache.
type Stats struct {
	Lanes []lane.Stats `json:"lanes"`
	Cache CacheStats   `json:"cache"`
}

// CacheStats counts lookup cache use. A miss is a lookup that queried the
// database.
type CacheStats struct {
	Hits    uint64 `json:"hits"`
	Misses  uint64 `json:"misses"`
	Entries int    `json:"entries"`
}

// Status is the reply of the <prefix>.enricher.status endpoint.
type Status struct {
	Service string   `json:"service"`
	Version string   `json:"version"`
	Driver  string   `json:"driver"`
	Types   []string `json:"types"`
	Stats
}

// New checks cfg (after defaults) and deps and compiles every catalog
// type's lookups, body and crm.id_key; errors name the config or catalog
// key. It does not touch the database or NATS: Start does.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.NC == nil:
		return nil, errors.New("enricher: Deps.NC is required")
	case deps.JS == nil:
		return nil, errors.New("enricher: Deps.JS is required")
	case deps.Catalog == nil:
		return nil, errors.New("enricher: Deps.Catalog is required")
	case deps.DB == nil:
		return nil, errors.New("enricher: Deps.DB is required")
	case deps.Names.Partitions() == 0:
		return nil, errors.New("enricher: Deps.Names is required (topology.New)")
	case deps.Ledger != nil && deps.Ledger.Conn() != deps.JS.Conn():
		return nil, fmt.Errorf("enricher: Deps.Ledger: %w", ledger.ErrWrongConn)
	}
	if deps.Dialect.Driver() == "" {
		d, err := productdb.DialectFor(cfg.DB.Driver)
		if err != nil {
			return nil, err
		}
		deps.Dialect = d
	}
	types, err := compile(deps.Catalog, deps.Dialect)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, deps: deps, types: types,
		log: deps.Logger.With().Str("service", "enricher").Logger()}
	if cfg.Cache.Size > 0 {
		s.cache = expirable.NewLRU[string, map[string]any](cfg.Cache.Size, nil, cfg.Cache.TTL)
	}
	return s, nil
}

// Handler is the lane handler (exported for tests).
func (s *Service) Handler() lane.Handler { return s.handle }

// Check verifies that every lookup's table and columns exist. Start calls
// it; the error wraps ErrLookupCheck and names the catalog key.
func (s *Service) Check(ctx context.Context) error {
	return checkTables(ctx, s.deps.DB, s.types, s.deps.Catalog.Names())
}

// Start checks the lookup tables, ensures the streams, starts the
// enricher lanes and registers the micro service.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group != nil {
		return ErrStarted
	}
	if err := s.Check(ctx); err != nil {
		return err
	}
	if err := s.deps.Names.Ensure(ctx, s.deps.JS); err != nil {
		return err
	}
	g, err := lane.NewGroup(s.deps.JS, lane.Config{
		Stage: topology.StageEnricher, Names: s.deps.Names, Handler: s.handle, IsolateKeys: true,
		Partitions: s.deps.Partitions, Logger: s.log, Observe: s.deps.Observe,
		BeforeAck: s.recordParks(),
	})
	if err != nil {
		return err
	}
	if err := g.Start(ctx); err != nil {
		_ = g.Stop(ctx)
		return err
	}
	svc, err := s.addService()
	if err != nil {
		_ = g.Stop(ctx)
		return err
	}
	s.group, s.svc = g, svc
	s.crash = make(chan error, 1)
	s.unwatch = conn.WatchClosed(s.deps.NC, s.crash, "enricher")
	s.log.Info().Str("driver", s.deps.Dialect.Driver()).Int("types", len(s.types)).
		Ints("partitions", s.partitions()).Msg("enricher started")
	return nil
}

// partitions lists the partitions this instance runs (Deps.Partitions, or
// every partition when it is empty), for the start-up line: an empty list
// there read as "nothing to do".
func (s *Service) partitions() []int {
	if len(s.deps.Partitions) > 0 {
		return s.deps.Partitions
	}
	all := make([]int, s.deps.Names.Partitions())
	for p := range all {
		all[p] = p
	}
	return all
}

func (s *Service) addService() (micro.Service, error) {
	svc, err := micro.AddService(s.deps.NC, micro.Config{
		Name:        ServiceName,
		Version:     ServiceVersion,
		Description: "Sluice enricher: events -> SQL lookups + jq mapping -> CRM requests on the dispatch stream",
		StatsHandler: func(*micro.Endpoint) any {
			return s.Stats()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("enricher: micro service: %w", err)
	}
	subj := s.deps.Names.Config().Prefix + ".enricher.status"
	err = svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) {
		b, err := json.Marshal(s.Status())
		if err != nil {
			_ = r.Error("500", err.Error(), nil)
			return
		}
		_ = r.Respond(b)
	}), micro.WithEndpointSubject(subj))
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("enricher: status endpoint: %w", err)
	}
	return svc, nil
}

// Stop stops the lanes after their current message and the micro service.
// If ctx ends first, running handlers are cancelled.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	g, svc, unwatch := s.group, s.svc, s.unwatch
	s.group, s.svc, s.unwatch = nil, nil, nil
	s.mu.Unlock()
	if unwatch != nil {
		unwatch()
	}
	var errs []error
	if svc != nil {
		errs = append(errs, svc.Stop())
	}
	if g != nil {
		errs = append(errs, g.Stop(ctx))
		if err := s.deps.Ledger.Close(ctx); err != nil {
			s.log.Warn().Err(err).Msg("ledger records not all acknowledged at stop")
		}
	}
	return errors.Join(errs...)
}

// Restart drops partition p's consume loop and starts a new one (for the
// watchdog, when a lane stalls). The message in hand is settled first.
func (s *Service) Restart(p int) error {
	s.mu.Lock()
	g := s.group
	s.mu.Unlock()
	if g == nil {
		return errors.New("enricher: not started")
	}
	return g.Restart(p)
}

// Stats returns the lanes' and the cache's counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	g := s.group
	s.mu.Unlock()
	st := Stats{Lanes: []lane.Stats{}, Cache: CacheStats{Hits: s.hits.Load(), Misses: s.misses.Load()}}
	if g != nil {
		st.Lanes = g.Stats()
	}
	if s.cache != nil {
		st.Cache.Entries = s.cache.Len()
	}
	return st
}

// Status is Stats with the service's identity and types.
func (s *Service) Status() Status {
	return Status{Service: ServiceName, Version: ServiceVersion, Driver: s.deps.Dialect.Driver(),
		Types: s.deps.Catalog.Names(), Stats: s.Stats()}
}

// Done delivers an error when the running service died on its own: its
// NATS connection closed for good. A supervisor
// (watchdog.Crasher) stops and restarts it. It is nil before Start.
func (s *Service) Done() <-chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crash
}
