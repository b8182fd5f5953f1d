package inbound

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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
	"sluice.dev/mesh/productdb"
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
	cfg     Config
	deps    Deps
	log     zerolog.Logger
	types   map[string]*compiledType
	sources []*source
	store   *store
	stats   counters
	// refusalLog is log, rate-limited, for refused requests.
	refusalLog zerolog.Logger

	mu        sync.Mutex
	group     *lane.Group
	svc       micro.Service
	srv       *http.Server
	ln        net.Listener
	done      chan struct{}
	crash     chan error // Done
	stopWatch func()
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
// builds the verifiers. It does not touch NATS or the database.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.NC == nil:
		return nil, errors.New("inbound: Deps.NC is required")
	case deps.JS == nil:
		return nil, errors.New("inbound: Deps.JS is required")
	case deps.DB == nil:
		return nil, errors.New("inbound: Deps.DB is required")
	case deps.Names.Partitions() == 0:
		return nil, errors.New("inbound: Deps.Names is required (topology.New)")
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
	return s, nil
}

func (s *Service) now() time.Time { return s.deps.Now() }

// LaneHandler is the writer's lane handler (exported for tests).
func (s *Service) LaneHandler() lane.Handler { return s.handle }

// Start creates the bookkeeping tables, ensures the streams, starts the
// writer lanes, registers the micro service and starts the HTTP receiver.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group != nil {
		return ErrStarted
	}
	if err := s.store.ensure(ctx); err != nil {
		return err
	}
	if err := s.deps.Names.Ensure(ctx, s.deps.JS); err != nil {
		return err
	}
	if err := s.deps.Names.EnsureInbound(ctx, s.deps.JS); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("inbound.http_addr: %w", err)
	}
	g, err := lane.NewGroup(s.deps.JS, lane.Config{Stage: topology.StageInbound, Names: s.deps.Names,
		Handler: s.handle, Partitions: s.deps.Partitions, Logger: s.log, Observe: s.deps.Observe,
		IsolateKeys: true, // an invalid webhook's entity waits behind it until replayed or discarded
	})
	if err == nil {
		if err = g.Start(ctx); err != nil {
			_ = g.Stop(ctx)
		}
	}
	if err != nil {
		_ = ln.Close()
		return err
	}
	svc, err := s.addService()
	if err != nil {
		_ = g.Stop(ctx)
		_ = ln.Close()
		return err
	}
	s.group, s.svc, s.ln = g, svc, ln
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	done := make(chan struct{})
	s.srv, s.done = srv, done
	crash := make(chan error, 1)
	s.crash, s.stopWatch = crash, conn.WatchClosed(s.deps.NC, crash, "inbound")
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("webhook receiver stopped")
			select {
			case crash <- fmt.Errorf("inbound: webhook receiver: %w", err):
			default:
			}
		}
	}()
	paths := make([]string, len(s.sources))
	for i, src := range s.sources {
		paths[i] = src.cfg.Path
	}
	s.log.Info().Str("addr", ln.Addr().String()).Strs("paths", paths).Int("types", len(s.types)).
		Str("driver", s.deps.Dialect.Driver()).Msg("inbound started")
	return nil
}

// Addr is the receiver's listening address (after Start).
func (s *Service) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

func (s *Service) addService() (micro.Service, error) {
	svc, err := micro.AddService(s.deps.NC, micro.Config{
		Name:         ServiceName,
		Version:      ServiceVersion,
		Description:  "Sluice inbound: CRM webhooks -> inbound stream -> validation -> database",
		StatsHandler: func(*micro.Endpoint) any { return s.Stats() },
	})
	if err != nil {
		return nil, fmt.Errorf("inbound: micro service: %w", err)
	}
	err = svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) {
		b, _ := json.Marshal(s.Stats())
		_ = r.Respond(b)
	}), micro.WithEndpointSubject(s.deps.Names.Config().Prefix+".inbound.status"))
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("inbound: status endpoint: %w", err)
	}
	return svc, nil
}

// Stop stops the receiver (in-flight requests finish), then the lanes
// after their current item, then the micro service. If ctx ends first,
// requests and handlers are cancelled.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	g, svc, srv, done, unwatch := s.group, s.svc, s.srv, s.done, s.stopWatch
	s.group, s.svc, s.srv, s.stopWatch = nil, nil, nil, nil
	s.mu.Unlock()
	if g == nil {
		return nil
	}
	unwatch()
	var errs []error
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		errs = append(errs, err)
	}
	<-done
	errs = append(errs, g.Stop(ctx))
	if err := svc.Stop(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

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
	s.mu.Lock()
	g := s.group
	s.mu.Unlock()
	if g != nil {
		st.Lanes = g.Stats()
	}
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
// NATS connection closed for good, or the webhook receiver stopped serving. A supervisor
// (watchdog.Crasher) stops and restarts it. It is nil before Start.
func (s *Service) Done() <-chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crash
}
