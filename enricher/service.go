package enricher

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/service"
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
	// Outlet, if set (dispatcher.inline), sends each mapped request from
	// the enricher's lane instead of forwarding it to the dispatch stream.
	// It must be on NC/JS and Ledger's connection.
	Outlet Outlet
}

// Outlet is what the enricher needs of an inline outlet
// (dispatcher.Outlet): Open at Start, Close at Stop, the lanes configured
// for delivery, its park records, and Deliver for each mapped request.
type Outlet interface {
	Open(ctx context.Context) error
	Close()
	Lane(c *lane.Config)
	BeforeAck() func(lane.Observation) func(context.Context) error
	Deliver(ctx context.Context, m *lane.Msg, r crmreq.Request) lane.Outcome
}

// Service is the enricher: its handler in the service shell (Start, Stop,
// Restart, Done, Addr come from service.Shell).
type Service struct {
	*service.Shell[*Service]
	cfg   Config
	deps  Deps
	log   zerolog.Logger
	types map[string]*mapping
	cache *expirable.LRU[string, map[string]any] // nil: disabled
	stmts stmts                                  // the lookups' prepared statements

	hits, misses atomic.Uint64
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
// key. It does not touch the database or NATS: Start does (it checks the
// lookup tables, ensures the streams and starts the lanes).
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.Catalog == nil:
		return nil, errors.New("enricher: Deps.Catalog is required")
	case deps.DB == nil:
		return nil, errors.New("enricher: Deps.DB is required")
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
	s := &Service{cfg: cfg, deps: deps, types: types}
	if cfg.Cache.Size > 0 {
		s.cache = expirable.NewLRU[string, map[string]any](cfg.Cache.Size, nil, cfg.Cache.TTL)
	}
	spec := service.Spec{
		Name: ServiceName, Short: "enricher", Stage: topology.StageEnricher,
		Description: "Sluice enricher: events -> SQL lookups + jq mapping -> CRM requests on the dispatch stream",
		Partitions:  deps.Partitions, Observe: deps.Observe, BeforeAck: s.recordParks(), Retry: cfg.retryPolicy(),
		Stats: func() any { return s.Stats() }, Status: func() any { return s.Status() },
		Prepare: s.Check,
		Stopped: func(context.Context) error { return s.stmts.close() },
		Started: func(e *zerolog.Event) *zerolog.Event {
			return e.Str("driver", s.deps.Dialect.Driver()).Int("types", len(s.types)).Bool("inline", s.deps.Outlet != nil)
		},
	}
	if out := deps.Outlet; out != nil {
		spec.Description = "Sluice enricher: events -> SQL lookups + jq mapping -> CRM (dispatcher.inline)"
		spec.Lane, spec.BeforeAck = out.Lane, out.BeforeAck()
		spec.Prepare = func(ctx context.Context) error {
			if err := s.Check(ctx); err != nil {
				return err
			}
			return out.Open(ctx)
		}
		spec.Stopped = func(context.Context) error {
			out.Close()
			return s.stmts.close()
		}
	}
	s.Shell, err = service.New(s, spec, service.Deps{NC: deps.NC, JS: deps.JS, Names: deps.Names, Logger: deps.Logger, Ledger: deps.Ledger})
	if err != nil {
		return nil, err
	}
	s.log = s.Log()
	return s, nil
}

// Handler is the lane handler (exported for tests).
func (s *Service) Handler() lane.Handler { return s.handle }

// Handle is the lane handler the shell runs.
func (s *Service) Handle(ctx context.Context, m *lane.Msg) lane.Outcome { return s.handle(ctx, m) }

// Check verifies that every lookup's table and columns exist. Start calls
// it; the error wraps ErrLookupCheck and names the catalog key.
func (s *Service) Check(ctx context.Context) error {
	return checkTables(ctx, s.deps.DB, s.types, s.deps.Catalog.Names())
}

// Stats returns the lanes' and the cache's counters.
func (s *Service) Stats() Stats {
	st := Stats{Lanes: s.LaneStats(), Cache: CacheStats{Hits: s.hits.Load(), Misses: s.misses.Load()}}
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
