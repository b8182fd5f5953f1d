// Package service is the one shell every Sluice service runs in: New
// checks the dependencies, Start ensures the stage's streams, starts its
// lanes, registers the micro service (PING/INFO/STATS and a status
// endpoint), serves the optional HTTP listener with the hardened
// HTTPConfig and watches the NATS connection; Stop takes it all down in
// order and closes the ledger writer; Restart restarts one lane; Done reports a
// crash to the supervisor. A stage is then only its handler and config.
package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/conn"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
	"sluice.dev/mesh/version"
)

// Handler is what the shell runs: the stage's lane handler. A service
// without lanes (ingest) uses NoLanes.
type Handler interface {
	Handle(ctx context.Context, m *lane.Msg) lane.Outcome
}

// NoLanes is the Handler of a service that runs no lanes (Spec.Stage empty).
type NoLanes struct{}

// Handle is never called: a service without a stage has no lanes.
func (NoLanes) Handle(context.Context, *lane.Msg) lane.Outcome {
	return lane.Park("no lanes", errors.New("service: this service runs no lanes"), nil)
}

// Spec says what one service is to the shell. Only Name is required.
type Spec struct {
	// Name is the micro service name ("sluice-enricher"; default: the
	// stage's registered Service); errors and logs use Short.
	Name string
	// Short names the service in errors, logs and the connection watch
	// ("enricher").
	Short string
	// Description and Metadata are the micro service's.
	Description string
	Metadata    map[string]string
	// Stage runs lanes of that stage (topology.StageSpecs) with the
	// Handler; empty: no lanes.
	Stage topology.Stage
	// Partitions this instance runs. Empty: all.
	Partitions []int
	// Middleware wraps the lane handler, outermost first.
	Middleware []lane.Middleware
	// Observe is called after each lane message is settled.
	Observe func(lane.Observation)
	// BeforeAck is lane.Config.BeforeAck (the ledger's park records).
	BeforeAck func(lane.Observation) func(context.Context) error
	// Lane, if set, sets the stage's own lane options (step-aside) on the
	// lane config the shell built.
	Lane func(c *lane.Config)
	// Retry is the stage's retry policy (the lane runner's own retries use
	// it too). Zero fields: the stage's registered policy.
	Retry retry.Policy
	// Stats is the reply of $SRV.STATS; Status that of a stage's status
	// endpoint <prefix>.<Short>.status (default Stats).
	Stats, Status func() any
	// Endpoints adds the service's own micro endpoints.
	Endpoints func(svc micro.Service) error
	// HTTPAddr is where HTTP is served ("" no HTTP; port 0 picks one).
	HTTPAddr string
	// HTTP is the handler served on HTTPAddr.
	HTTP http.Handler
	// HTTPConfig limits the HTTP server (zero: the defaults).
	HTTPConfig HTTPConfig
	// Prepare runs in each Start after the stage's Ensure, before anything
	// is started (check tables, open buckets); its error ends Start.
	Prepare func(ctx context.Context) error
	// Stopping runs first in Stop (refuse new work); Stopped runs last
	// (wait for in-flight work, close clients).
	Stopping func()
	Stopped  func(ctx context.Context) error
	// Started adds fields to the "started" log line.
	Started func(e *zerolog.Event) *zerolog.Event
}

// Deps are what every service runs on. NC, JS and Names are required.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Names  topology.Names
	Logger zerolog.Logger
	// Ledger, if set, must publish on JS's connection (a record reaches the
	// server before the ack); Stop flushes it.
	Ledger *ledger.Writer
}

// Shell runs one service with handler H.
type Shell[H Handler] struct {
	spec Spec
	deps Deps
	h    H
	log  zerolog.Logger

	mu      sync.Mutex
	running bool
	group   *lane.Group
	svc     micro.Service
	srv     *http.Server
	ln      net.Listener
	served  chan struct{}
	crash   chan error
	unwatch func()
}

// New checks spec and deps; it touches neither NATS nor anything else.
func New[H Handler](h H, spec Spec, deps Deps) (*Shell[H], error) {
	if st, ok := topology.SpecOf(spec.Stage); ok && spec.Name == "" {
		spec.Name = st.Service
	}
	if spec.Short == "" {
		spec.Short = spec.Name
	}
	var errs []error
	if deps.NC == nil || deps.JS == nil {
		errs = append(errs, fmt.Errorf("%s: Deps.NC and Deps.JS are required", spec.Short))
	}
	if err := deps.Names.Config().Validate(); err != nil || deps.Names.Partitions() == 0 {
		errs = append(errs, fmt.Errorf("%s: Deps.Names is required (topology.New): %v", spec.Short, err))
	}
	if deps.Ledger != nil && deps.JS != nil && deps.Ledger.Conn() != deps.JS.Conn() {
		errs = append(errs, fmt.Errorf("%s: Deps.Ledger: %w", spec.Short, ledger.ErrWrongConn))
	}
	if spec.Stage != "" {
		st, ok := topology.SpecOf(spec.Stage)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown stage %q", spec.Short, spec.Stage))
		}
		spec.Retry = spec.Retry.WithDefaults(st.Retry)
		if err := spec.Retry.Validate(spec.Short + ".retry"); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range spec.Partitions {
		if p < 0 || p >= deps.Names.Partitions() {
			errs = append(errs, fmt.Errorf("%s: Deps.Partitions: %d out of range 0..%d", spec.Short, p, deps.Names.Partitions()-1))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if spec.Stats == nil {
		spec.Stats = func() any { return nil }
	}
	if spec.Status == nil {
		spec.Status = spec.Stats
	}
	return &Shell[H]{spec: spec, deps: deps, h: h, log: deps.Logger.With().Str("service", spec.Short).Logger()}, nil
}

// Start ensures the stage's streams, prepares, listens, starts the lanes,
// registers the micro service and serves HTTP. On error everything started
// is stopped again.
func (s *Shell[H]) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return fmt.Errorf("%s: %w", s.spec.Short, ErrStarted)
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if s.spec.Stage != "" {
		st, _ := topology.SpecOf(s.spec.Stage)
		if err := st.Ensure(s.deps.Names, ctx, s.deps.JS); err != nil {
			return err
		}
	}
	if s.spec.Prepare != nil {
		if err := s.spec.Prepare(ctx); err != nil {
			return err
		}
	}
	var ln net.Listener
	if s.spec.HTTPAddr != "" {
		var lc net.ListenConfig
		if ln, err = lc.Listen(ctx, "tcp", s.spec.HTTPAddr); err != nil {
			return fmt.Errorf("%s.http_addr: %w", s.spec.Short, err)
		}
		undo = append(undo, func() { _ = ln.Close() })
	}
	var g *lane.Group
	if s.spec.Stage != "" {
		st, _ := topology.SpecOf(s.spec.Stage)
		lc := lane.Config{Stage: s.spec.Stage, Names: s.deps.Names,
			Handler: lane.Chain(s.h.Handle, s.spec.Middleware...), IsolateKeys: st.IsolateKeys,
			Partitions: s.spec.Partitions, Logger: s.log, Observe: s.spec.Observe, BeforeAck: s.spec.BeforeAck,
			Retry: s.spec.Retry}
		if s.spec.Lane != nil {
			s.spec.Lane(&lc)
		}
		g, err = lane.NewGroup(s.deps.JS, lc)
		if err != nil {
			return err
		}
		undo = append(undo, func() { _ = g.Stop(ctx) })
		if err := g.Start(ctx); err != nil {
			return err
		}
	}
	svc, err := s.addMicro()
	if err != nil {
		return err
	}
	s.running, s.group, s.svc, s.ln = true, g, svc, ln
	s.crash = make(chan error, 1)
	s.unwatch = conn.WatchClosed(s.deps.NC, s.crash, s.spec.Short)
	if ln != nil {
		s.srv, s.served = NewHTTPServer(s.spec.HTTP, s.spec.HTTPConfig, s.log), make(chan struct{})
		go s.serve(s.srv, ln, s.served, s.crash)
	}
	e := s.log.Info().Ints("partitions", s.spec.Partitions)
	if ln != nil {
		e = e.Str("http_addr", ln.Addr().String())
	}
	if s.spec.Started != nil {
		e = s.spec.Started(e)
	}
	e.Msg(s.spec.Short + " started")
	return nil
}

func (s *Shell[H]) serve(srv *http.Server, ln net.Listener, served chan struct{}, crash chan error) {
	defer close(served)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error().Err(err).Msg("HTTP listener stopped")
		select {
		case crash <- fmt.Errorf("%s: http: %w", s.spec.Short, err):
		default:
		}
	}
}

func (s *Shell[H]) addMicro() (micro.Service, error) {
	svc, err := micro.AddService(s.deps.NC, micro.Config{
		Name: s.spec.Name, Version: version.String(), Description: s.spec.Description, Metadata: s.spec.Metadata,
		StatsHandler: func(*micro.Endpoint) any { return s.spec.Stats() },
	})
	if err != nil {
		return nil, fmt.Errorf("%s: micro service: %w", s.spec.Short, err)
	}
	if s.spec.Stage != "" {
		err = svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) {
			_ = r.RespondJSON(s.spec.Status())
		}), micro.WithEndpointSubject(s.StatusSubject()))
	}
	if err == nil && s.spec.Endpoints != nil {
		err = s.spec.Endpoints(svc)
	}
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("%s: micro endpoints: %w", s.spec.Short, err)
	}
	return svc, nil
}

// StatusSubject is the request subject of the status endpoint:
// <prefix>.<short name>.status.
func (s *Shell[H]) StatusSubject() string {
	return s.deps.Names.Config().Prefix + "." + s.spec.Short + ".status"
}

// Stop refuses new work, lets in-flight HTTP requests finish, stops the
// lanes after their current message, deregisters the micro service and
// closes the ledger writer. If ctx ends first, requests and handlers are
// cancelled (their messages come back later). Stopping a stopped (or never
// started) service does nothing and returns nil.
func (s *Shell[H]) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return nil
	}
	g, svc, srv, served, unwatch := s.group, s.svc, s.srv, s.served, s.unwatch
	s.running, s.group, s.svc, s.srv, s.unwatch = false, nil, nil, nil, nil
	s.mu.Unlock()
	unwatch()
	if s.spec.Stopping != nil {
		s.spec.Stopping()
	}
	var errs []error
	if srv != nil {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
			errs = append(errs, fmt.Errorf("%s: http shutdown: %w", s.spec.Short, err))
		}
		<-served
	}
	if g != nil {
		errs = append(errs, g.Stop(ctx))
	}
	if err := svc.Stop(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, fmt.Errorf("%s: stop micro service: %w", s.spec.Short, err))
	}
	if s.spec.Stopped != nil {
		errs = append(errs, s.spec.Stopped(ctx))
	}
	if err := s.deps.Ledger.Close(ctx); err != nil {
		s.log.Warn().Err(err).Msg("ledger records not all acknowledged at stop")
	}
	s.log.Info().Msg(s.spec.Short + " stopped")
	return errors.Join(errs...)
}

// Restart drops partition p's consume loop and starts a new one (the
// watchdog asks for it over the control subject when a lane stalls). The
// message in hand is settled first. ErrNotStarted when not running or
// without lanes.
func (s *Shell[H]) Restart(p int) error {
	s.mu.Lock()
	g := s.group
	s.mu.Unlock()
	if g == nil {
		return fmt.Errorf("%s: %w", s.spec.Short, ErrNotStarted)
	}
	return g.Restart(p)
}

// Done delivers an error when the running service died on its own: its
// NATS connection closed for good, or its HTTP listener stopped serving. A
// supervisor (watchdog.Supervisor) stops and restarts it. It is nil before
// the first Start.
func (s *Shell[H]) Done() <-chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crash
}

// Addr is the HTTP listen address (the real port when the config said 0),
// or "" without HTTP or before Start.
func (s *Shell[H]) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// LaneStats returns the running lanes' stats (empty when not running).
func (s *Shell[H]) LaneStats() []lane.Stats {
	s.mu.Lock()
	g := s.group
	s.mu.Unlock()
	if g == nil {
		return []lane.Stats{}
	}
	return g.Stats()
}

// HTTPConfig is the limits the HTTP listener runs with (defaults filled).
func (s *Shell[H]) HTTPConfig() HTTPConfig { return s.spec.HTTPConfig.WithDefaults() }

// Running reports whether the service is started.
func (s *Shell[H]) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// RetryPolicy is the stage's retry policy (its config over the stage's
// registered defaults).
func (s *Shell[H]) RetryPolicy() retry.Policy { return s.spec.Retry }

// Log is the service's logger (field service=<short name>).
func (s *Shell[H]) Log() zerolog.Logger { return s.log }
