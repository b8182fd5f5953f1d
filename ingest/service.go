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
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/service"
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

// Service is the ingest front door: its HTTP and NATS handlers in the
// service shell (Start, Stop, Done, Addr come from service.Shell).
type Service struct {
	*service.Shell[service.NoLanes]
	cfg  Config
	deps Deps
	log  zerolog.Logger
	// refusalLog logs refused requests (401), a burst of 10 a second.
	refusalLog zerolog.Logger
	tokens     []tokenHash
	gate       gate

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
	if deps.Catalog == nil {
		return nil, errors.New("ingest: Deps.Catalog is required")
	}
	s := &Service{cfg: cfg, deps: deps, log: deps.Logger.With().Str("service", "ingest").Logger()}
	s.refusalLog = s.log.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second})
	for _, t := range cfg.Tokens {
		s.tokens = append(s.tokens, tokenHash{name: t.Name, sum: sha256.Sum256([]byte(t.Token))})
	}
	var err error
	s.Shell, err = service.New(service.NoLanes{}, service.Spec{
		Name: ServiceName, Short: "ingest",
		Description: "Sluice front door: validates events against the catalog and stores them in the events stream",
		Metadata:    map[string]string{"events_stream": deps.Names.EventsStream()},
		Stats:       func() any { return s.Stats() }, Endpoints: s.addEndpoints,
		HTTPAddr: cfg.HTTPAddr, HTTP: s.Handler(), HTTPConfig: service.HTTPConfig{MaxBodyBytes: cfg.MaxBodyBytes},
		// Refuse new NATS requests first; answer the running ones before
		// the connection is drained.
		Stopping: s.gate.close,
		Stopped: func(ctx context.Context) error {
			s.log.Info().Uint64("accepted", s.Accepted()).Msg("ingest accepted")
			return s.gate.wait(ctx)
		},
		Started: func(e *zerolog.Event) *zerolog.Event {
			return e.Str("validate", s.validateSubject()).Str("publish", s.publishSubject()).Bool("auth", len(s.tokens) > 0)
		},
	}, service.Deps{NC: deps.NC, JS: deps.JS, Names: deps.Names, Logger: deps.Logger})
	if err != nil {
		return nil, err
	}
	s.log = s.Log()
	return s, nil
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
