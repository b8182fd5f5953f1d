// Package harness assembles a whole Sluice pipeline in one process for
// end-to-end tests and the benchmark: a real nats-server with a file store,
// the sample marketplace catalog and SQLite product database, the CRM
// simulator, and the enricher and dispatcher services, each on its own NATS
// connection so one can be killed (connection dropped mid-message) and
// started again while the rest runs, and the server restarted on the same
// store.
package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

// Options configure a Harness.
type Options struct {
	// Dir holds the JetStream store and the SQLite database. Required.
	Dir string
	// Topology; zero fields get test-friendly defaults (16 partitions,
	// AckWait 3s).
	Topology topology.Config
	// Enricher and Dispatcher configs; dispatcher.crm.url is set to the
	// simulator's.
	Enricher   enricher.Config
	Dispatcher dispatcher.Config
	// Sim configures the CRM simulator.
	Sim crmsim.Config
	// Catalog, when set, replaces the sample marketplace catalog (types
	// without lookups need no database tables).
	Catalog *catalog.Catalog
	// ExtraCustomers adds customers 51..50+n to the sample database so plans
	// can use more keys.
	ExtraCustomers int
	// Logger for the services (zerolog.Nop() by default).
	Logger zerolog.Logger
	// URLs, when set, is a comma-separated list of client URLs of an
	// external NATS server or cluster (e.g. meshtest.RunCluster): the
	// harness starts no server of its own, connects every service there,
	// and RestartNATS returns ErrExternalNATS. Dir still holds the
	// database.
	URLs string
	// Ledger turns the delivery ledger on (Ledger.Enabled): New creates
	// its stream and each service gets a ledger.Writer on its own
	// connection. Off by default.
	Ledger ledger.Config
}

// ErrExternalNATS is returned by RestartNATS when the harness runs on
// Options.URLs; restart the external cluster's nodes instead.
var ErrExternalNATS = errors.New("harness: NATS is external (Options.URLs)")

type running struct {
	nc  *nats.Conn
	svc interface {
		Start(context.Context) error
		Stop(context.Context) error
	}
}

// Harness is a running pipeline.
type Harness struct {
	opts    Options
	Names   topology.Names
	Catalog *catalog.Catalog
	DB      *sql.DB
	Sim     *crmsim.Sim
	// JS is an admin/producer connection's JetStream context.
	JS jetstream.JetStream
	// LedgerCounters add up every ledger writer's counts (Options.Ledger).
	LedgerCounters ledger.Counters

	mu   sync.Mutex
	srv  *server.Server
	port int
	// releasePort frees the embedded server's reserved port (Close).
	releasePort func()
	admin       *nats.Conn
	enricher    *running
	dispatcher  *running
	disp        *dispatcher.Service
	// enr and outlet are the running enricher and its inline outlet.
	enr    *enricher.Service
	outlet *dispatcher.Outlet
	// replicas are the extra dispatchers of StartDispatcherReplica.
	replicas []*running
}

// New starts the server, simulator and database and creates the topology.
// Services are started with StartEnricher and StartDispatcher.
func New(ctx context.Context, opts Options) (*Harness, error) {
	if opts.Dir == "" {
		return nil, errors.New("harness: Dir is required")
	}
	if opts.Topology.Partitions == 0 {
		opts.Topology.Partitions = 16
	}
	if opts.Topology.AckWait == 0 {
		opts.Topology.AckWait = 3 * time.Second
	}
	h := &Harness{opts: opts, Names: topology.New(opts.Topology)}
	if opts.URLs == "" {
		// A reserved port, not one the kernel picks: RestartNATS binds it
		// again, and a released ephemeral port can meanwhile become a
		// client connection's local port (see meshtest.ReservePort).
		port, release, err := meshtest.ReservePort()
		if err != nil {
			return nil, err
		}
		h.port, h.releasePort = port, release
		if err := h.startServer(); err != nil {
			release()
			return nil, err
		}
	}
	var err error
	h.admin, h.JS, err = h.connect("admin")
	if err != nil {
		h.Close()
		return nil, err
	}
	if err := h.Names.Ensure(ctx, h.JS); err != nil {
		h.Close()
		return nil, err
	}
	if opts.Ledger.Enabled {
		if err := ledger.Ensure(ctx, h.JS, h.Names, opts.Ledger); err != nil {
			h.Close()
			return nil, err
		}
	}
	var cc catalog.Config
	if err := yaml.Unmarshal(schemas.MarketplaceCatalog(), &cc); err != nil {
		h.Close()
		return nil, err
	}
	if h.Catalog = opts.Catalog; h.Catalog == nil {
		if h.Catalog, err = catalog.Compile(cc, schemas.Marketplace()); err != nil {
			h.Close()
			return nil, err
		}
	}
	dbcfg := productdb.Config{Driver: "sqlite", DSN: filepath.Join(opts.Dir, "product.db")}
	h.opts.Enricher.DB = dbcfg
	if h.DB, err = productdb.Open(ctx, dbcfg); err != nil {
		h.Close()
		return nil, err
	}
	if err := productdb.ExecScript(ctx, h.DB, schemas.MarketplaceSeed()); err != nil {
		h.Close()
		return nil, err
	}
	if err := SeedCustomers(ctx, h.DB, 51, 50+opts.ExtraCustomers); err != nil {
		h.Close()
		return nil, err
	}
	if h.Sim, err = crmsim.New(opts.Sim, zerolog.Nop()); err != nil {
		h.Close()
		return nil, err
	}
	if err := h.Sim.Start(ctx); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func (h *Harness) startServer() error {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: h.port, JetStream: true, NoSigs: true, NoLog: true,
		StoreDir: filepath.Join(h.opts.Dir, "jetstream"), MaxPayload: 8 << 20,
	})
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		return errors.New("harness: nats-server did not start")
	}
	h.srv = s
	return nil
}

// URL is the NATS client URL (Options.URLs when set).
func (h *Harness) URL() string {
	if h.opts.URLs != "" {
		return h.opts.URLs
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", h.port)
}

func (h *Harness) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(h.URL(), nats.Name(name), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(64<<20))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// RestartNATS shuts the server down and starts it again on the same port
// and store; clients reconnect by themselves.
func (h *Harness) RestartNATS() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.opts.URLs != "" {
		return ErrExternalNATS
	}
	h.srv.Shutdown()
	h.srv.WaitForShutdown()
	return h.startServer()
}

// StartEnricher starts the enricher on a new connection.
func (h *Harness) StartEnricher(ctx context.Context) error {
	nc, js, err := h.connect("enricher")
	if err != nil {
		return err
	}
	deps := enricher.Deps{NC: nc, JS: js, Names: h.Names, Catalog: h.Catalog,
		DB: h.DB, Logger: h.opts.Logger, Ledger: h.ledgerWriter(nc)}
	var out *dispatcher.Outlet
	h.mu.Lock()
	cfg := h.opts.Dispatcher
	h.mu.Unlock()
	if cfg.Inline {
		// dispatcher.inline: the enricher's lanes send to the CRM through
		// an outlet on their own connection and ledger writer.
		cfg.CRM.URL = h.Sim.URL()
		if out, err = dispatcher.NewOutlet(cfg, dispatcher.Deps{NC: nc, JS: js, Names: h.Names,
			Logger: h.opts.Logger, Ledger: deps.Ledger}); err != nil {
			nc.Close()
			return err
		}
		deps.Outlet = out
	}
	e, err := enricher.New(h.opts.Enricher, deps)
	if err != nil {
		nc.Close()
		return err
	}
	if err := e.Start(ctx); err != nil {
		nc.Close()
		return err
	}
	h.mu.Lock()
	h.enricher = &running{nc: nc, svc: e}
	h.enr, h.outlet = e, out
	h.mu.Unlock()
	return nil
}

// StartDispatcher starts the dispatcher on a new connection.
func (h *Harness) StartDispatcher(ctx context.Context) error {
	nc, js, err := h.connect("dispatcher")
	if err != nil {
		return err
	}
	cfg := h.opts.Dispatcher
	cfg.CRM.URL = h.Sim.URL()
	d, err := dispatcher.New(cfg, dispatcher.Deps{NC: nc, JS: js, Names: h.Names,
		Logger: h.opts.Logger, Ledger: h.ledgerWriter(nc)})
	if err != nil {
		nc.Close()
		return err
	}
	if err := d.Start(ctx); err != nil {
		nc.Close()
		return err
	}
	h.mu.Lock()
	h.dispatcher = &running{nc: nc, svc: d}
	h.disp = d
	h.mu.Unlock()
	return nil
}

// ledgerWriter is a service's ledger writer on its connection nc (nil
// with the ledger off).
func (h *Harness) ledgerWriter(nc *nats.Conn) *ledger.Writer {
	if !h.opts.Ledger.Enabled {
		return nil
	}
	c := h.opts.Ledger.WithDefaults()
	w, err := ledger.NewWriter(nc, h.Names, ledger.WriterConfig{MaxPending: c.MaxPending, Enriched: c.Enriched, Bodies: c.Bodies,
		SensitiveFields: c.SensitiveFields, Logger: h.opts.Logger, Counters: &h.LedgerCounters})
	if err != nil { // only for a nil connection
		panic(err)
	}
	return w
}

// Dispatcher returns the running dispatcher (nil when stopped).
func (h *Harness) Dispatcher() *dispatcher.Service {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.disp
}

// SetInline turns dispatcher.inline on or off for the next StartEnricher
// (a deployment switching modes).
func (h *Harness) SetInline(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.opts.Dispatcher.Inline = on
}

// Outlet returns the running enricher's inline outlet (nil when stopped
// or without Dispatcher.Inline).
func (h *Harness) Outlet() *dispatcher.Outlet {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.outlet
}

// Enricher returns the running enricher (nil when stopped).
func (h *Harness) Enricher() *enricher.Service {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.enr
}

// DispatcherConn returns the running dispatcher's NATS connection (nil
// when stopped), e.g. to find the server it is connected to.
func (h *Harness) DispatcherConn() *nats.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dispatcher == nil {
		return nil
	}
	return h.dispatcher.nc
}

// KillEnricher drops the enricher's connection with no goodbye — whatever
// it held unacked comes back after AckWait — and then reaps its goroutines.
func (h *Harness) KillEnricher() {
	h.kill(&h.enricher)
	h.mu.Lock()
	h.enr, h.outlet = nil, nil
	h.mu.Unlock()
}

// StartDispatcherReplica starts one more dispatcher on its own connection
// next to StartDispatcher's: the replicas share the lanes, each partition
// worked by one of them (pinned). It returns the replica's number for
// KillDispatcherReplica.
func (h *Harness) StartDispatcherReplica(ctx context.Context) (int, error) {
	nc, js, err := h.connect("dispatcher-replica")
	if err != nil {
		return 0, err
	}
	cfg := h.opts.Dispatcher
	cfg.CRM.URL = h.Sim.URL()
	d, err := dispatcher.New(cfg, dispatcher.Deps{NC: nc, JS: js, Names: h.Names,
		Logger: h.opts.Logger.With().Bool("replica", true).Logger(), Ledger: h.ledgerWriter(nc)})
	if err == nil {
		err = d.Start(ctx)
	}
	if err != nil {
		nc.Close()
		return 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.replicas = append(h.replicas, &running{nc: nc, svc: d})
	return len(h.replicas) - 1, nil
}

// KillDispatcherReplica kills replica i like KillDispatcher.
func (h *Harness) KillDispatcherReplica(i int) {
	h.mu.Lock()
	r := &h.replicas[i]
	h.mu.Unlock()
	h.kill(r)
}

// KillDispatcher is KillEnricher for the dispatcher.
func (h *Harness) KillDispatcher() {
	h.kill(&h.dispatcher)
	h.mu.Lock()
	h.disp = nil
	h.mu.Unlock()
}

func (h *Harness) kill(r **running) {
	h.mu.Lock()
	cur := *r
	*r = nil
	h.mu.Unlock()
	if cur == nil {
		return
	}
	cur.nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = cur.svc.Stop(ctx)
}

func (h *Harness) stop(r **running) {
	h.mu.Lock()
	cur := *r
	*r = nil
	h.mu.Unlock()
	if cur == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = cur.svc.Stop(ctx)
	_ = cur.nc.Drain()
}

// Close stops everything gracefully.
func (h *Harness) Close() {
	h.stop(&h.enricher)
	h.stop(&h.dispatcher)
	for i := range h.replicas {
		h.stop(&h.replicas[i])
	}
	if h.Sim != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = h.Sim.Stop(ctx)
		cancel()
	}
	if h.admin != nil {
		h.admin.Close()
	}
	if h.DB != nil {
		h.DB.Close()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		h.srv.Shutdown()
		h.srv.WaitForShutdown()
	}
	if h.releasePort != nil {
		h.releasePort()
		h.releasePort = nil
	}
}

// SeedCustomers adds customers from..to (inclusive) to the sample SQLite
// product database, so plans can spread over more keys than the 50 seeded.
func SeedCustomers(ctx context.Context, db *sql.DB, from, to int) error {
	for i := from; i <= to; i++ {
		if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO customers (id, name, email, phone, city, created_at)
			VALUES (?, ?, ?, ?, 'Pune', '2026-01-01T00:00:00Z')`, i, fmt.Sprintf("Customer %d", i),
			fmt.Sprintf("c%d@example.com", i), fmt.Sprintf("+91 90000 %05d", i)); err != nil {
			return err
		}
	}
	return nil
}
