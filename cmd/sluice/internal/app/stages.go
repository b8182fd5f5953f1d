package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

// laneService is a running stage as `sluice run` sees it: supervised, and
// restartable lane by lane over its control subject.
type laneService interface {
	instance
	Restart(p int) error
}

// stageEnv is what a stage's wiring builds its instances from.
type stageEnv struct {
	ctx   context.Context
	c     *Config
	names topology.Names
	admin jetstream.JetStream
	cat   *catalog.Catalog
	m     *metrics.Metrics
	log   zerolog.Logger
	// ledger counts every ledger writer's records (/metrics).
	ledger *ledger.Counters
	// start starts a helper (the CRM simulator) that stops with the run.
	start func(name string, s runnable) error
	// onClose runs when Run returns (closes databases).
	onClose func(func())
	st      *stats
}

// ledgerWriter is an instance's ledger writer on its own connection.
func (e *stageEnv) ledgerWriter(js jetstream.JetStream) (*ledger.Writer, error) {
	return newLedgerWriter(e.c.Ledger, js.Conn(), e.names, e.ledger, e.log)
}

// stageWiring is how `sluice run` builds one lane stage. The stage's name,
// streams, lanes, control subject, status, parked keys and watchdog checks
// come from its topology.StageSpec; this is only what the binary adds.
type stageWiring struct {
	// runs reports whether target runs the stage with config c.
	runs func(c Config, target string) bool
	// open prepares what every instance of the stage shares (databases,
	// the CRM simulator) and returns the builder of one instance.
	open func(e *stageEnv) (build func(nc *nats.Conn, js jetstream.JetStream) (laneService, error), err error)
	// collectors are the stage's own /metrics counters, read from the
	// current instance (and st's inline outlet).
	collectors func(get func() laneService, st *stats) []prometheus.Collector
	// attach hands the first instance to the progress line and the demo.
	attach func(st *stats, s laneService)
}

// errInlineNeedsCRM: with dispatcher.inline the enricher sends to the CRM
// itself, so it needs the CRM's address (the built-in simulator runs with
// the dispatcher stage of the same process).
var errInlineNeedsCRM = errors.New("dispatcher.inline: the enricher sends to the CRM: set dispatcher.crm.url, or run the dispatcher in the same process for the built-in simulator")

// stageWirings holds the wiring of every stage in topology.StageSpecs.
var stageWirings = map[topology.Stage]stageWiring{
	topology.StageEnricher: {
		runs: func(_ Config, target string) bool { return wants(target, "enricher") },
		open: func(e *stageEnv) (func(*nats.Conn, jetstream.JetStream) (laneService, error), error) {
			if e.c.Dispatcher.Inline && e.c.Dispatcher.CRM.URL == "" {
				return nil, errInlineNeedsCRM
			}
			db, dialect, err := openProductDB(e.ctx, *e.c, e.log)
			if err != nil {
				return nil, err
			}
			e.onClose(func() { db.Close() })
			return func(nc *nats.Conn, js jetstream.JetStream) (laneService, error) {
				lw, err := e.ledgerWriter(js)
				if err != nil {
					return nil, err
				}
				deps := enricher.Deps{NC: nc, JS: js, Names: e.names, Catalog: e.cat, DB: db,
					Dialect: dialect, Logger: e.log, Observe: e.m.ObserveFunc(), Ledger: lw}
				if e.c.Dispatcher.Inline {
					// The outlet shares the enricher's connection and ledger
					// writer: its records reach the server before the ack.
					out, err := dispatcher.NewOutlet(e.c.Dispatcher, dispatcher.Deps{NC: nc, JS: js, Names: e.names,
						Logger: e.log, OnDelivered: e.m.ObserveProduceToCRM, Ledger: lw})
					if err != nil {
						return nil, err
					}
					deps.Outlet = out
					e.st.outlet.Store(out)
					e.log.Warn().Msg("dispatcher.inline is experimental: fewer chaos runs behind it than two hops (docs/configuration.md, inline delivery)")
				}
				return enricher.New(e.c.Enricher, deps)
			}, nil
		},
		collectors: func(get func() laneService, st *stats) []prometheus.Collector {
			cs := []prometheus.Collector{counter("sluice_enricher_lookup_cache_total",
				"Enricher lookups by cache result (hit, miss: a database query).", []string{"result"},
				func() []metrics.Sample {
					c := get().(*enricher.Service).Stats().Cache
					return []metrics.Sample{sample(c.Hits, "hit"), sample(c.Misses, "miss")}
				})}
			if !wants(st.target, "dispatcher") {
				// An enricher-only process sends inline (dispatcher.inline):
				// its CRM counters are its own.
				cs = append(cs, crmCounters(func() *dispatcher.Service { return nil }, st.outlet.Load)...)
			}
			return cs
		},
	},
	topology.StageDispatcher: {
		runs: func(_ Config, target string) bool { return wants(target, "dispatcher") },
		open: func(e *stageEnv) (func(*nats.Conn, jetstream.JetStream) (laneService, error), error) {
			if e.c.UsesSimulator() {
				if err := startSimulator(e); err != nil {
					return nil, err
				}
			}
			return func(nc *nats.Conn, js jetstream.JetStream) (laneService, error) {
				lw, err := e.ledgerWriter(js)
				if err != nil {
					return nil, err
				}
				return dispatcher.New(e.c.Dispatcher, dispatcher.Deps{NC: nc, JS: js, Names: e.names,
					Logger:  e.log,
					Observe: e.m.ObserveFunc(), OnDelivered: e.m.ObserveProduceToCRM, Ledger: lw})
			}, nil
		},
		collectors: func(get func() laneService, st *stats) []prometheus.Collector {
			return crmCounters(func() *dispatcher.Service { return get().(*dispatcher.Service) }, st.outlet.Load)
		},
		attach: func(st *stats, s laneService) { st.dispatcher = s.(*dispatcher.Service) },
	},
	topology.StageInbound: {
		runs: func(c Config, target string) bool { return c.runs(target, "inbound") },
		open: func(e *stageEnv) (func(*nats.Conn, jetstream.JetStream) (laneService, error), error) {
			db, err := productdb.Open(e.ctx, e.c.Inbound.DB)
			if err != nil {
				return nil, fmt.Errorf("inbound.db: %w", err)
			}
			e.onClose(func() { db.Close() })
			if len(e.c.Inbound.Types) == 0 && e.c.Inbound.CatalogFile == "" && e.c.Inbound.DB.Driver == "sqlite" {
				for _, script := range []string{schemas.MarketplaceSeed(), schemas.InboundSetup()} {
					if err := productdb.ExecScript(e.ctx, db, script); err != nil {
						return nil, fmt.Errorf("seed sample inbound tables: %w", err)
					}
				}
			}
			return func(nc *nats.Conn, js jetstream.JetStream) (laneService, error) {
				return inbound.New(e.c.Inbound, inbound.Deps{NC: nc, JS: js, Names: e.names, DB: db,
					Logger: e.log, Observe: e.m.ObserveFunc()})
			}, nil
		},
		collectors: func(get func() laneService, _ *stats) []prometheus.Collector {
			in := func() inbound.Stats { return get().(*inbound.Service).Stats() }
			return []prometheus.Collector{
				counter("sluice_inbound_webhooks_total", "Webhook items received and stored, or refused, by result.",
					[]string{"result"}, func() []metrics.Sample {
						st := in()
						return []metrics.Sample{sample(st.Received, "received"), sample(st.Duplicates, "duplicate"),
							sample(st.Unreadable, "unreadable"), sample(st.Unauthorized, "unauthorized"), sample(st.BadRequest, "bad_request"),
							sample(st.TooLarge, "too_large"), sample(st.Unavailable, "unavailable")}
					}),
				counter("sluice_inbound_items_total", "Webhook items the writer settled, by result.",
					[]string{"result"}, func() []metrics.Sample {
						st := in()
						return []metrics.Sample{sample(st.Applied, "applied"), sample(st.Stale, "skipped_stale"),
							sample(st.Echo, "skipped_echo"), sample(st.Unchanged, "skipped_unchanged"),
							sample(st.Parked, "parked"), sample(st.DBErrors, "db_error")}
					}),
			}
		},
		attach: func(st *stats, s laneService) { st.inbound = s.(*inbound.Service) },
	},
}

// startSimulator starts the built-in CRM simulator and points the
// dispatcher at it.
func startSimulator(e *stageEnv) error {
	simCfg := e.c.Simulator
	if simCfg.StateFile == "" {
		// Like a real CRM, the built-in one keeps its records across
		// restarts, so the CRM ids in the id map stay valid.
		simCfg.StateFile = filepath.Join(e.c.DataDir, "crmsim-records.jsonl")
	}
	sim, err := crmsim.New(simCfg, e.log.With().Str("service", "crmsim").Logger())
	if err != nil {
		return err
	}
	if err := e.start("crmsim", sim); err != nil {
		return err
	}
	e.c.Dispatcher.CRM.URL = sim.URL()
	e.st.sim = sim
	// A simulator that knows no records (its state file is new or was
	// removed): CRM ids kept from an earlier run name records it never had
	// (updates would 404), so they go.
	if sim.Created() == 0 {
		if err := clearCRMIDs(e.ctx, e.admin, e.names); err != nil {
			return err
		}
	}
	e.log.Info().Str("url", sim.URL()).Msg("no dispatcher.crm.url set: sending to the built-in CRM simulator")
	return nil
}

// counter is a scrape-time counter of a service's own totals.
func counter(name, help string, labels []string, read func() []metrics.Sample) prometheus.Collector {
	return metrics.NewFunc(name, help, prometheus.CounterValue, labels, read)
}

func sample(v uint64, labels ...string) metrics.Sample {
	return metrics.Sample{Labels: labels, Value: float64(v)}
}

// crmCounters are the CRM answers and deliveries of the dispatcher d and
// of the enricher's inline outlet (either may be nil: no samples then).
func crmCounters(d func() *dispatcher.Service, outlet func() *dispatcher.Outlet) []prometheus.Collector {
	return []prometheus.Collector{
		counter("sluice_crm_responses_total", "CRM answers by status code, plus \"timeout\" and \"error\" for requests without an answer.",
			[]string{"code"}, func() []metrics.Sample {
				codes := map[string]uint64{}
				if d := d(); d != nil {
					codes = d.Stats().CRMStatuses
				}
				if out := outlet(); out != nil { // dispatcher.inline: the enricher's sends
					for code, n := range out.Stats().CRMStatuses {
						codes[code] += n
					}
				}
				var out []metrics.Sample
				for code, n := range codes {
					out = append(out, sample(n, code))
				}
				return out
			}),
		counter("sluice_dispatcher_delivered_total", "Requests the CRM accepted (2xx).", nil,
			func() []metrics.Sample {
				d, out := d(), outlet()
				if d == nil && out == nil {
					return nil
				}
				return []metrics.Sample{sample(delivered(d, out))}
			}),
	}
}

// delivered is what the CRM accepted from the dispatcher's lanes (d nil:
// not run here) and the enricher's inline outlet (nil without
// dispatcher.inline).
func delivered(d *dispatcher.Service, out *dispatcher.Outlet) uint64 {
	var n uint64
	if d != nil {
		n = d.Delivered()
	}
	if out != nil {
		n += out.Delivered()
	}
	return n
}
