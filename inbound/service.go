package inbound

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/service"
	"sluice.dev/mesh/topology"
	"sluice.dev/mesh/version"
)

// Service identity on the micro API ($SRV.PING|INFO|STATS.sluice-inbound).
const ServiceName = "sluice-inbound"

// ServiceVersion is Sluice's one version (mesh/version).
var ServiceVersion = version.String()

// Deps are what the inbound service runs on. NC, JS, Names and DB are
// required.
type Deps struct {
	NC    *nats.Conn
	JS    jetstream.JetStream
	Names topology.Names
	// DB is the database webhooks are written to; the caller opens
	// (productdb.Open) and closes it.
	DB *sql.DB
	// Dialect of DB. Zero: derived from Config.DB.Driver.
	Dialect productdb.Dialect
	Logger  zerolog.Logger
	// Partitions the writer runs. Empty: all.
	Partitions []int
	// Now is the clock for signature timestamps. Default time.Now.
	Now func() time.Time
	// Observe, if set, is called after each lane message is settled
	// (metrics.Metrics.Observe).
	Observe func(lane.Observation)
}

// Service receives CRM webhooks, stores them in the inbound stream and
// writes them to the database from ordered lanes.
type Service struct {
	*service.Shell[*Service]
	cfg     Config
	deps    Deps
	log     zerolog.Logger
	types   map[string]*compiledType
	sources []*source
	store   *store
	stats   counters
	// refusalLog is log, rate-limited, for refused requests.
	refusalLog zerolog.Logger
}

type counters struct {
	received, duplicates, unauthorized, badRequest, tooLarge, unavailable atomic.Uint64
	unreadable                                                            atomic.Uint64
	applied, stale, echo, unchanged, redelivered, parked, dbErrors        atomic.Uint64
}

// Stats is the service's state, served on $SRV.STATS and <prefix>.inbound.status.
type Stats struct {
	// Receiver: items stored, of which duplicates and unreadable ones
	// (stored to be parked: no type, no id, not JSON…), and refused
	// requests.
	Received     uint64 `json:"received"`
	Duplicates   uint64 `json:"duplicates"`
	Unreadable   uint64 `json:"unreadable"`
	Unauthorized uint64 `json:"unauthorized"`
	BadRequest   uint64 `json:"bad_request"`
	TooLarge     uint64 `json:"too_large"`
	Unavailable  uint64 `json:"unavailable"`
	// Writer: items settled by outcome, parked, and database failures
	// (each one a retry of the lane's head).
	Applied     uint64       `json:"applied"`
	Stale       uint64       `json:"skipped_stale"`
	Echo        uint64       `json:"skipped_echo"`
	Unchanged   uint64       `json:"skipped_unchanged"`
	Redelivered uint64       `json:"redelivered"`
	Parked      uint64       `json:"parked"`
	DBErrors    uint64       `json:"db_errors"`
	Lanes       []lane.Stats `json:"lanes"`
}

// New checks cfg (after defaults) and deps, compiles the webhook types and
// builds the verifiers. It does not touch NATS or the database: Start
// creates the bookkeeping tables, ensures the streams, starts the writer
// lanes and the HTTP receiver.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.DB == nil {
		return nil, errors.New("inbound: Deps.DB is required")
	}
	if deps.Dialect.Driver() == "" {
		d, err := productdb.DialectFor(cfg.DB.Driver)
		if err != nil {
			return nil, err
		}
		deps.Dialect = d
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	cat, fsys, err := LoadCatalog(cfg)
	if err != nil {
		return nil, err
	}
	types, err := compileCatalog(cat, fsys, cfg.AppliedTable, cfg.VersionsTable)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, deps: deps, types: types, log: deps.Logger.With().Str("service", "inbound").Logger(),
		store: &store{db: deps.DB, d: deps.Dialect, applied: cfg.AppliedTable, versions: cfg.VersionsTable}}
	s.refusalLog = refusalLogger(s.log)
	for _, sc := range cfg.Sources {
		v, err := NewVerifier(sc, cfg.Tolerance)
		if err != nil {
			return nil, err
		}
		env, err := compileEnvelope(sc.Envelope)
		if err != nil {
			return nil, err
		}
		s.sources = append(s.sources, &source{cfg: sc, v: v, env: env})
	}
	paths := make([]string, len(s.sources))
	for i, src := range s.sources {
		paths[i] = src.cfg.Path
	}
	s.Shell, err = service.New(s, service.Spec{
		Name: ServiceName, Short: "inbound", Stage: topology.StageInbound,
		Description: "Sluice inbound: CRM webhooks -> inbound stream -> validation -> database",
		Partitions:  deps.Partitions, Observe: deps.Observe, Retry: cfg.retryPolicy(),
		Stats:    func() any { return s.Stats() },
		HTTPAddr: cfg.HTTPAddr, HTTP: s.Handler(), HTTPConfig: service.HTTPConfig{MaxBodyBytes: cfg.MaxBodyBytes},
		Prepare: s.store.ensure,
		Started: func(e *zerolog.Event) *zerolog.Event {
			return e.Strs("paths", paths).Int("types", len(s.types)).Str("driver", s.deps.Dialect.Driver())
		},
	}, service.Deps{NC: deps.NC, JS: deps.JS, Names: deps.Names, Logger: deps.Logger})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) now() time.Time { return s.deps.Now() }

// LaneHandler is the writer's lane handler (exported for tests).
func (s *Service) LaneHandler() lane.Handler { return s.handle }

// Handle is the writer's lane handler the shell runs.
func (s *Service) Handle(ctx context.Context, m *lane.Msg) lane.Outcome { return s.handle(ctx, m) }

// Stats returns a snapshot of the counters and lanes.
func (s *Service) Stats() Stats {
	st := Stats{
		Received: s.stats.received.Load(), Duplicates: s.stats.duplicates.Load(), Unreadable: s.stats.unreadable.Load(),
		Unauthorized: s.stats.unauthorized.Load(), BadRequest: s.stats.badRequest.Load(),
		TooLarge: s.stats.tooLarge.Load(), Unavailable: s.stats.unavailable.Load(),
		Applied: s.stats.applied.Load(), Stale: s.stats.stale.Load(), Echo: s.stats.echo.Load(),
		Unchanged: s.stats.unchanged.Load(), Redelivered: s.stats.redelivered.Load(),
		Parked: s.stats.parked.Load(), DBErrors: s.stats.dbErrors.Load(),
	}
	st.Lanes = s.LaneStats()
	return st
}

func (s *Service) count(outcome string) {
	switch outcome {
	case OutcomeApplied:
		s.stats.applied.Add(1)
	case OutcomeStale:
		s.stats.stale.Add(1)
	case OutcomeEcho:
		s.stats.echo.Add(1)
	case OutcomeUnchanged:
		s.stats.unchanged.Add(1)
	case OutcomeDuplicate:
		s.stats.redelivered.Add(1)
	}
}
