package app

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
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
	if err := ensureTopology(ctx, adminJS, names); err != nil {
		return err
	}
	if err := ensureLedger(ctx, adminJS, names, c.Ledger); err != nil {
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
	defer stopAll()
	start := func(name string, s runnable) error {
		if err := s.Start(ctx); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		started = append(started, named{name, s})
		log.Info().Str("service", name).Msg("started")
		return nil
	}

	var st stats
	// Every pipeline service runs under a supervisor that restarts it
	// watchdog.restart_delay after it crashes (Done fires).
	sups := watchdog.Supervisors{}
	m := metrics.New() // one registry for every service of this process
	// Every ledger writer of this process (one per service connection)
	// adds to these; /metrics exports them.
	var ledgerCounts ledger.Counters
	var enr *enricher.Service
	demoOn := target == "all" && c.DemoOn() // before the simulator fills in crm.url
	if wants(target, "dispatcher") {
		if c.UsesSimulator() {
			simCfg := c.Simulator
			if simCfg.StateFile == "" {
				// Like a real CRM, the built-in one keeps its records
				// across restarts, so the CRM ids in the id map stay valid.
				simCfg.StateFile = filepath.Join(c.DataDir, "crmsim-records.jsonl")
			}
			sim, err := crmsim.New(simCfg, log.With().Str("service", "crmsim").Logger())
			if err != nil {
				return err
			}
			if err := start("crmsim", sim); err != nil {
				return err
			}
			c.Dispatcher.CRM.URL = sim.URL()
			st.sim = sim
			// A simulator that knows no records (its state file is new or
			// was removed): CRM ids kept from an earlier run name records
			// it never had (updates would 404), so they go.
			if sim.Created() == 0 {
				if err := clearCRMIDs(ctx, adminJS, names); err != nil {
					return err
				}
			}
			log.Info().Str("url", sim.URL()).Msg("no dispatcher.crm.url set: sending to the built-in CRM simulator")
		}
		sup, cur, err := supervise(dispatcher.ServiceName, c.Watchdog.RestartDelay, log,
			func() (*nats.Conn, jetstream.JetStream, error) { return b.connect("dispatcher") },
			func(nc *nats.Conn, js jetstream.JetStream) (*dispatcher.Service, error) {
				lw, err := newLedgerWriter(c.Ledger, js.Conn(), names, &ledgerCounts, log)
				if err != nil {
					return nil, err
				}
				return dispatcher.New(c.Dispatcher, dispatcher.Deps{NC: nc, JS: js, Names: names,
					Logger:  log.With().Str("service", "dispatcher").Logger(),
					Observe: m.ObserveFunc(), OnDelivered: m.ObserveProduceToCRM, Ledger: lw})
			})
		if err != nil {
			return err
		}
		if err := start("dispatcher", sup); err != nil {
			return err
		}
		sups[dispatcher.ServiceName] = sup
		if err := serveControlOf(b, names, topology.StageDispatcher, cur, log); err != nil {
			return err
		}
		st.dispatcher = cur.get()
	}
	if wants(target, "enricher") {
		db, dialect, err := openProductDB(ctx, c, log)
		if err != nil {
			return err
		}
		defer db.Close()
		sup, cur, err := supervise(enricher.ServiceName, c.Watchdog.RestartDelay, log,
			func() (*nats.Conn, jetstream.JetStream, error) { return b.connect("enricher") },
			func(nc *nats.Conn, js jetstream.JetStream) (*enricher.Service, error) {
				lw, err := newLedgerWriter(c.Ledger, js.Conn(), names, &ledgerCounts, log)
				if err != nil {
					return nil, err
				}
				return enricher.New(c.Enricher, enricher.Deps{NC: nc, JS: js, Names: names, Catalog: cat, DB: db,
					Dialect: dialect, Logger: log.With().Str("service", "enricher").Logger(), Observe: m.ObserveFunc(),
					Ledger: lw})
			})
		if err != nil {
			return err
		}
		if err := start("enricher", sup); err != nil {
			return err
		}
		sups[enricher.ServiceName] = sup
		if err := serveControlOf(b, names, topology.StageEnricher, cur, log); err != nil {
			return err
		}
		enr = cur.get()
	}
	if wants(target, "ingest") {
		sup, cur, err := supervise(ingest.ServiceName, c.Watchdog.RestartDelay, log,
			func() (*nats.Conn, jetstream.JetStream, error) { return b.connect("ingest") },
			func(nc *nats.Conn, js jetstream.JetStream) (*ingest.Service, error) {
				return ingest.New(c.Ingest, ingest.Deps{NC: nc, JS: js, Names: names, Catalog: cat,
					Logger: log.With().Str("service", "ingest").Logger()})
			})
		if err != nil {
			return err
		}
		if err := start("ingest", sup); err != nil {
			return err
		}
		sups[ingest.ServiceName] = sup
		in := cur.get()
		st.ingest = in
		if a := in.Addr(); a != "" {
			log.Info().Msgf("ingest HTTP on http://%s/v1/events", a)
		}
	}
	if c.runs(target, "inbound") {
		db, err := productdb.Open(ctx, c.Inbound.DB)
		if err != nil {
			return fmt.Errorf("inbound.db: %w", err)
		}
		defer db.Close()
		if len(c.Inbound.Types) == 0 && c.Inbound.CatalogFile == "" && c.Inbound.DB.Driver == "sqlite" {
			for _, script := range []string{schemas.MarketplaceSeed(), schemas.InboundSetup()} {
				if err := productdb.ExecScript(ctx, db, script); err != nil {
					return fmt.Errorf("seed sample inbound tables: %w", err)
				}
			}
		}
		sup, cur, err := supervise(inbound.ServiceName, c.Watchdog.RestartDelay, log,
			func() (*nats.Conn, jetstream.JetStream, error) { return b.connect("inbound") },
			func(nc *nats.Conn, js jetstream.JetStream) (*inbound.Service, error) {
				return inbound.New(c.Inbound, inbound.Deps{NC: nc, JS: js, Names: names, DB: db,
					Logger: log.With().Str("service", "inbound").Logger(), Observe: m.ObserveFunc()})
			})
		if err != nil {
			return err
		}
		if err := start("inbound", sup); err != nil {
			return err
		}
		sups[inbound.ServiceName] = sup
		if err := serveControlOf(b, names, topology.StageInbound, cur, log); err != nil {
			return err
		}
		in := cur.get()
		st.inbound = in
		log.Info().Msgf("inbound CRM webhooks on http://%s%s", in.Addr(), c.Inbound.Path)
	}
	var statusPage http.Handler // mounted on the ops listener (watchdog.page.addr empty)
	if wants(target, "watchdog") {
		nc, js, err := b.connect("watchdog")
		if err != nil {
			return err
		}
		wcfg := c.Watchdog
		if c.runs(target, "inbound") && !slices.Contains(wcfg.Services, inbound.ServiceName) {
			wcfg.Services = append(slices.Clone(wcfg.Services), inbound.ServiceName)
		}
		wdeps := watchdog.Deps{NC: nc, JS: js, Names: names,
			Logger: log.With().Str("service", "watchdog").Logger(), Redactor: redact.New(c.Ledger.SensitiveFields...)}
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
		dm := newDemo(c.Demo, js, names, httpURL, log.With().Str("service", "demo").Logger())
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
		st.js, st.names, st.target = js, names, target
		go st.report(ctx, c.ProgressInterval, log)
	}
	if c.Ops.Addr != "off" {
		nc, js, err := b.connect("ops")
		if err != nil {
			return err
		}
		svcs := running{ingest: st.ingest, enricher: enr, dispatcher: st.dispatcher, inbound: st.inbound}
		cs := append(serviceCollectors(svcs), metrics.NewLanes(js, names, svcs.stages(), lagTimeout),
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
