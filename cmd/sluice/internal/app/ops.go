package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/service"
)

// DefaultOpsAddr is the default ops.addr.
const DefaultOpsAddr = "127.0.0.1:9090"

// OpsConfig configures the operator HTTP listener of `sluice run`.
type OpsConfig struct {
	// Addr is the listen address of /metrics, /healthz and /readyz; "off"
	// turns the listener off. Default "127.0.0.1:9090" (loopback only).
	Addr string `yaml:"addr"`
	// Pprof serves Go's profiler under /debug/pprof/ on the same listener
	// (CPU, heap, goroutines; `go tool pprof http://ADDR/debug/pprof/profile`).
	// Off by default: profiles reveal internals, and the listener may be
	// reachable beyond loopback. Default false.
	Pprof bool `yaml:"pprof"`
}

// readyTimeout bounds the JetStream request /readyz makes.
const readyTimeout = 2 * time.Second

// StreamInfoer is the part of jetstream.JetStream /readyz uses.
type StreamInfoer interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// opsServer serves /metrics, /healthz and /readyz.
type opsServer struct {
	addr   string
	nc     *nats.Conn
	js     StreamInfoer
	stream string
	m      *metrics.Metrics
	log    zerolog.Logger
	// page is the watchdog's status page, served on every other path
	// (GET /, /api/…) when set.
	page http.Handler
	// pprof mounts /debug/pprof/ when true.
	pprof bool
	// http limits the listener: the one hardened server config of every
	// Sluice listener (service.HTTPConfig defaults).
	http service.HTTPConfig

	srv *http.Server
	ln  net.Listener
}

func newOpsServer(addr string, nc *nats.Conn, js StreamInfoer, eventsStream string, m *metrics.Metrics, log zerolog.Logger) *opsServer {
	return &opsServer{addr: addr, nc: nc, js: js, stream: eventsStream, m: m, log: log}
}

func (o *opsServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := o.ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if o.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	if o.page != nil {
		mux.Handle("/", o.page)
	}
	return mux
}

// ready reports why the process is not ready: NATS not connected or the
// events stream not reachable.
func (o *opsServer) ready(ctx context.Context) error {
	if !o.nc.IsConnected() {
		return fmt.Errorf("NATS %s", o.nc.Status())
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if _, err := o.js.Stream(ctx, o.stream); err != nil {
		return fmt.Errorf("events stream %s: %w", o.stream, err)
	}
	return nil
}

// Start listens on addr and serves in the background.
func (o *opsServer) Start(context.Context) error {
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("ops.addr: %w", err)
	}
	o.ln = ln
	o.srv = service.NewHTTPServer(o.handler(), o.http, o.log)
	go func() {
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.log.Error().Err(err).Msg("ops listener")
		}
	}()
	if o.page != nil {
		o.log.Info().Msgf("ops HTTP on http://%s (/metrics, /healthz, /readyz, status page at /)", ln.Addr())
	} else {
		o.log.Info().Msgf("ops HTTP on http://%s (/metrics, /healthz, /readyz)", ln.Addr())
	}
	return nil
}

// Addr is the bound address (after Start).
func (o *opsServer) Addr() string {
	if o.ln == nil {
		return ""
	}
	return o.ln.Addr().String()
}

// Stop shuts the listener down.
func (o *opsServer) Stop(ctx context.Context) error {
	if o.srv == nil {
		return nil
	}
	return o.srv.Shutdown(ctx)
}
