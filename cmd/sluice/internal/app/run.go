package app

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/crmsim"
	"sluice.dev/ingest"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/redact"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
	"sluice.dev/watchdog"
)

// runnable is what run starts and stops.
type runnable interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

type named struct {
	name string
	svc  runnable
}

// Run starts target ("all" or one service) and blocks until ctx ends, then
// stops everything in reverse order: producers first, so every accepted
// event has been acked and every lane settled its message before NATS
// connections are drained.
func Run(ctx context.Context, c Config, target string, log zerolog.Logger) error {
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	b, err := openBus(c, log)
	if err != nil {
		return err
	}
	defer b.close()

	names := topology.New(c.Topology)
	_, adminJS, err := b.connect("admin")
	if err != nil {
		return err
	}
	if err := ensureTopology(ctx, adminJS, names, log); err != nil {
		return err
	}
	if err := ensureLedger(ctx, adminJS, names, c.Ledger, log); err != nil {
		return err
	}
	cat, err := loadCatalog(c.Catalog)
	if err != nil {
		return err
	}

	var started []named
	stopAll := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := len(started) - 1; i >= 0; i-- {
			if err := started[i].svc.Stop(sctx); err != nil {
				log.Warn().Err(err).Str("service", started[i].name).Msg("stop")
			} else {
				log.Info().Str("service", started[i].name).Msg("stopped")
			}
		}
	}
	// Databases the stages share close after every service stopped.
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	defer stopAll()
	start := func(name string, s runnable) error {
		if err := s.Start(ctx); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		started = append(started, named{name, s})
		log.Info().Str("service", name).Msg("started")
		return nil
	}

	st := stats{target: target} // the stages' collectors read target
	// Every pipeline service runs under a supervisor that restarts it
	// watchdog.restart_delay after it crashes (Done fires).
	sups := watchdog.Supervisors{}
	m := metrics.New() // one registry for every service of this process
	// Every ledger writer of this process (one per service connection)
	// adds to these; /metrics exports them.
	var ledgerCounts ledger.Counters
	demoOn := target == "all" && c.DemoOn() // before the simulator fills in crm.url
	// The lane stages, downstream first (topology.StageSpecs, wired in
	// stages.go), then the producers.
	env := &stageEnv{ctx: ctx, c: &c, names: names, admin: adminJS, cat: cat, m: m, log: log,
		ledger: &ledgerCounts, start: start, st: &st, onClose: func(f func()) { closers = append(closers, f) }}
	specs := topology.StageSpecs()
	slices.Reverse(specs)
	svcs := running{st: &st}
	for _, spec := range specs {
		w, ok := stageWirings[spec.Name]
		if !ok || !w.runs(c, target) {
			continue
		}
		get, err := runStage(b, env, spec, w, sups)
		if err != nil {
			return err
		}
		svcs.stages = append([]runningStage{{spec.Name, get, w}}, svcs.stages...)
	}
	if wants(target, "ingest") {
		sup, cur, err := supervise(ingest.ServiceName, c.Watchdog.RestartDelay, log,
			func() (*nats.Conn, jetstream.JetStream, error) { return b.connect("ingest") },
			func(nc *nats.Conn, js jetstream.JetStream) (*ingest.Service, error) {
				return ingest.New(c.Ingest, ingest.Deps{NC: nc, JS: js, Names: names, Catalog: cat,
					Logger: log})
			})
		if err != nil {
			return err
		}
		if err := start("ingest", sup); err != nil {
			return err
		}
		sups[ingest.ServiceName] = sup
		in := cur.get()
		st.ingest, svcs.ingest = in, in
		if a := in.Addr(); a != "" {
			log.Info().Msgf("ingest HTTP on http://%s/v1/events", a)
		}
	}
	var statusPage http.Handler // mounted on the ops listener (watchdog.page.addr empty)
	if wants(target, "watchdog") {
		nc, js, err := b.connect("watchdog")
		if err != nil {
			return err
		}
		wcfg := c.Watchdog
		for _, rs := range svcs.stages {
			if spec, _ := topology.SpecOf(rs.stage); spec.Optional && !slices.Contains(wcfg.Services, spec.Service) {
				wcfg.Services = append(slices.Clone(wcfg.Services), spec.Service)
			}
		}
		wdeps := watchdog.Deps{NC: nc, JS: js, Names: names,
			Logger: log, Redactor: redact.New(c.Ledger.SensitiveFields...)}
		if len(sups) > 0 {
			wdeps.RestartService = sups.RestartService
		}
		w, err := watchdog.New(wcfg, wdeps)
		if err != nil {
			return err
		}
		if err := start("watchdog", w); err != nil {
			return err
		}
		if wcfg.Page.Addr == "" {
			statusPage = w.Page().Handler()
		}
	}
	// The simulator's own webhooks (simulator.webhooks.profile) replace the
	// demo's Standard Webhooks ones.
	simHooks := st.sim != nil && st.inbound != nil && c.Simulator.Webhooks.Profile != crmsim.WebhookProfileNone
	if simHooks {
		path := c.Inbound.Sources[0].Path
		ws, err := crmsim.NewWebhookSender(c.Simulator.Webhooks, func() string { return "http://" + st.inbound.Addr() + path },
			log.With().Str("service", "crmsim-webhooks").Logger())
		if err != nil {
			return err
		}
		if err := start("crmsim-webhooks", ws); err != nil {
			return err
		}
	}
	if demoOn {
		_, js, err := b.connect("demo")
		if err != nil {
			return err
		}
		httpURL := func() string {
			if st.ingest != nil && st.ingest.Addr() != "" {
				return "http://" + st.ingest.Addr()
			}
			return ""
		}
		dm := newDemo(c.Demo, js, names, httpURL, c.Ingest.Tokens, log.With().Str("service", "demo").Logger())
		if !simHooks && st.inbound != nil && len(c.Inbound.Sources) > 0 && len(c.Inbound.Sources[0].Secrets) > 0 {
			dm.webhookSecret = c.Inbound.Sources[0].Secrets[0]
			dm.webhookURL = func() string { return "http://" + st.inbound.Addr() + c.Inbound.Path }
		}
		if err := start("demo", dm); err != nil {
			return err
		}
	}
	if c.ProgressInterval > 0 {
		_, js, err := b.connect("progress")
		if err != nil {
			return err
		}
		st.js, st.names = js, names
		go st.report(ctx, c.ProgressInterval, log)
	}
	if c.Ops.Addr != "off" {
		nc, js, err := b.connect("ops")
		if err != nil {
			return err
		}
		cs := append(serviceCollectors(svcs), metrics.NewLanes(js, names, svcs.stageNames(), lagTimeout),
			ledgerCollector(&ledgerCounts))
		if err := m.Register(cs...); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		// A busy ops port does not stop the event flow: it is logged loudly.
		ops := newOpsServer(c.Ops.Addr, nc, js, names.EventsStream(), m, log)
		ops.page = statusPage
		ops.pprof = c.Ops.Pprof
		if err := start("ops", ops); err != nil {
			log.Error().Err(err).Msg("ops listener NOT started: no /metrics, /healthz, /readyz (set ops.addr)")
		}
	}
	log.Info().Str("target", target).Msg("sluice is running; Ctrl-C stops it cleanly")
	<-ctx.Done()
	log.Info().Msg("stopping: draining producers, settling lanes, flushing acks")
	return nil
}

// openProductDB opens the product database. The default SQLite database
// under data_dir is seeded with the sample marketplace when the sample
// schemas are in use (no catalog.schemas_dir: the embedded marketplace,
// its types as shipped or restated in the file, e.g. with crm.find added
// as in deploy/realcrm/sluice.yaml). The seed only creates what is missing.
func openProductDB(ctx context.Context, c Config, log zerolog.Logger) (*sql.DB, productdb.Dialect, error) {
	db, err := productdb.Open(ctx, c.Enricher.DB)
	if err != nil {
		return nil, productdb.Dialect{}, fmt.Errorf("enricher.db: %w", err)
	}
	dialect, err := productdb.DialectFor(c.Enricher.DB.Driver)
	if err != nil {
		db.Close()
		return nil, productdb.Dialect{}, fmt.Errorf("enricher.db.driver: %w", err)
	}
	if (usesSample(c.Catalog) || c.Catalog.SchemasDir == "") && c.Enricher.DB.Driver == "sqlite" {
		if err := productdb.ExecScript(ctx, db, schemas.MarketplaceSeed()); err != nil {
			db.Close()
			return nil, productdb.Dialect{}, fmt.Errorf("seed sample product database: %w", err)
		}
		log.Info().Str("db", c.Enricher.DB.DSN).Msg("sample marketplace product database ready")
	}
	return db, dialect, nil
}

// clearCRMIDs empties the CRM id map (used when the built-in simulator
// stands in for the CRM and knows no records).
func clearCRMIDs(ctx context.Context, js jetstream.JetStream, names topology.Names) error {
	kv, err := js.KeyValue(ctx, names.CRMIDBucket())
	if err != nil {
		return fmt.Errorf("crm id map: %w", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("crm id map: %w", err)
	}
	for k := range keys.Keys() {
		if err := kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("crm id map: %w", err)
		}
	}
	return nil
}

// serveControl answers the watchdog's lane-restart requests for a stage on
// its control subject (see watchdog/README.md). The subscription ends with
// the service's connection.
func serveControl(nc *nats.Conn, names topology.Names, stage topology.Stage, restart func(int) error, log zerolog.Logger) error {
	_, err := watchdog.ServeControl(nc, names, string(stage), restart, log.With().Str("service", string(stage)).Logger())
	return err
}

// serveControlOf serves a supervised stage's control subject on a
// connection of its own, so it outlives the instances it restarts lanes of.
func serveControlOf[S interface {
	instance
	Restart(int) error
}](b *bus, names topology.Names, stage topology.Stage, cur *current[S], log zerolog.Logger) error {
	nc, _, err := b.connect(string(stage) + "-control")
	if err != nil {
		return err
	}
	return serveControl(nc, names, stage, func(p int) error { return cur.get().Restart(p) }, log)
}

// runStage starts one lane stage under a supervisor, serves its control
// subject and returns its current instance.
func runStage(b *bus, e *stageEnv, spec topology.StageSpec, w stageWiring, sups watchdog.Supervisors) (func() laneService, error) {
	stage := spec.Name
	build, err := w.open(e)
	if err != nil {
		return nil, err
	}
	sup, cur, err := supervise(spec.Service, e.c.Watchdog.RestartDelay, e.log,
		func() (*nats.Conn, jetstream.JetStream, error) { return b.connect(string(stage)) }, build)
	if err != nil {
		return nil, err
	}
	if err := e.start(string(stage), sup); err != nil {
		return nil, err
	}
	sups[spec.Service] = sup
	if err := serveControlOf(b, e.names, stage, cur, e.log); err != nil {
		return nil, err
	}
	svc := cur.get()
	if w.attach != nil {
		w.attach(e.st, svc)
	}
	if a, ok := svc.(interface{ Addr() string }); ok && a.Addr() != "" {
		e.log.Info().Msgf("%s HTTP on http://%s", stage, a.Addr())
	}
	return cur.get, nil
}
