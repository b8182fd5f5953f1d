// Package ingest is Sluice's front door: it accepts product events over HTTP
// (POST /v1/events, one envelope or an NDJSON batch) and over NATS (the
// "sluice-ingest" micro service), validates them against the catalog and
// stores them in the events stream. A producer gets its ack only after
// JetStream stored every event of the request; an invalid request stores
// nothing.
package ingest

import (
	"context"
	"crypto/sha256"
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

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/conn"
	"sluice.dev/mesh/topology"
)

// Deps are the service's collaborators.
type Deps struct {
	// NC carries the micro service. Required.
	NC *nats.Conn
	// JS publishes events. Create it with
	// jetstream.WithPublishAsyncTimeout(<publish_timeout>) so that acks that
	// never come are dropped from its pending table.
	JS jetstream.JetStream
	// Names gives the event subjects (topology.Names.EventSubject).
	Names topology.Names
	// Catalog validates events and derives keys. Required.
	Catalog *catalog.Catalog
	// Logger receives request failures (token names, never tokens or data).
	Logger zerolog.Logger
}

// Service is the ingest front door.
type Service struct {
	cfg  Config
	deps Deps
	log  zerolog.Logger
	// refusalLog logs refused requests (401), a burst of 10 a second.
	refusalLog zerolog.Logger
	tokens     []tokenHash

	mu      sync.Mutex
	started bool
	ln      net.Listener
	srv     *http.Server
	served  chan error
	crash   chan error // Done
	unwatch func()
	svc     micro.Service
	gate    gate

	stats    stats
	inFlight atomic.Int64 // HTTP event requests being handled
}

type tokenHash struct {
	name string
	sum  [sha256.Size]byte
}

// New checks cfg (after WithDefaults) and deps and returns a stopped service.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var errs []error
	if deps.NC == nil {
		errs = append(errs, errors.New("ingest: Deps.NC is required"))
	}
	if deps.JS == nil {
		errs = append(errs, errors.New("ingest: Deps.JS is required"))
	}
	if deps.Catalog == nil {
		errs = append(errs, errors.New("ingest: Deps.Catalog is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, deps: deps, log: deps.Logger.With().Str("service", "ingest").Logger()}
	s.refusalLog = s.log.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second})
	for _, t := range cfg.Tokens {
		s.tokens = append(s.tokens, tokenHash{name: t.Name, sum: sha256.Sum256([]byte(t.Token))})
	}
	return s, nil
}

// Start listens on cfg.HTTPAddr (unless "") and registers the micro service.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return ErrAlreadyStarted
	}
	if s.cfg.HTTPAddr != "" {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", s.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("ingest.http_addr: %w", err)
		}
		s.ln = ln
		s.srv = &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       time.Minute,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          newStdLogger(s.log),
		}
	}
	crash := make(chan error, 1)
	if s.srv != nil {
		srv, ln, served := s.srv, s.ln, make(chan error, 1)
		s.served = served
		go func() {
			err := srv.Serve(ln)
			served <- err
			if !errors.Is(err, http.ErrServerClosed) {
				select {
				case crash <- fmt.Errorf("ingest: http: %w", err):
				default:
				}
			}
		}()
	}
	svc, err := s.addMicro()
	if err != nil {
		if s.srv != nil {
			_ = s.srv.Close()
		}
		return fmt.Errorf("ingest: micro service: %w", err)
	}
	s.svc = svc
	s.started = true
	s.crash, s.unwatch = crash, conn.WatchClosed(s.deps.NC, crash, "ingest")
	s.log.Info().Str("http_addr", s.Addr()).Str("validate", s.validateSubject()).
		Str("publish", s.publishSubject()).Bool("auth", len(s.tokens) > 0).Msg("ingest started")
	return nil
}

// Stop stops taking requests and waits (until ctx ends) for in-flight ones
// to be stored and answered.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return nil
	}
	s.started = false
	s.unwatch()
	var errs []error
	s.gate.close()
	if err := s.svc.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("ingest: stop micro service: %w", err))
	}
	if s.srv != nil {
		if err := s.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("ingest: http shutdown: %w", err))
			_ = s.srv.Close()
		}
		if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("ingest: http: %w", err))
		}
	}
	if err := s.gate.wait(ctx); err != nil {
		errs = append(errs, fmt.Errorf("ingest: waiting for NATS requests: %w", err))
	}
	s.log.Info().Uint64("accepted", s.Accepted()).Msg("ingest stopped")
	return errors.Join(errs...)
}

// Addr is the HTTP listen address (the real port when cfg said 0), or ""
// when HTTP is off or not started.
func (s *Service) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Accepted is the number of events JetStream acked (duplicates included).
func (s *Service) Accepted() uint64 { return s.stats.accepted.Load() }

// gate counts in-flight NATS requests and refuses new ones once closed.
type gate struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *gate) leave() { g.wg.Done() }

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *gate) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done delivers an error when the running service died on its own: its
// NATS connection closed for good, or its HTTP server stopped serving. A supervisor
// (watchdog.Crasher) stops and restarts it. It is nil before Start.
func (s *Service) Done() <-chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crash
}
