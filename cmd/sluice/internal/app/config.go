package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
	"sluice.dev/ingest"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/embedded"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// EnvPrefix prefixes every environment override.
const EnvPrefix = "SLUICE_"

// Config is the whole YAML configuration file. Every section is documented
// in docs/configuration.md.
type Config struct {
	// DataDir holds the embedded JetStream store and the sample SQLite
	// product database. Default "./data".
	DataDir string `yaml:"data_dir"`
	// Log configures logging.
	Log LogConfig `yaml:"log"`
	// NATS says which NATS to use.
	NATS NATSConfig `yaml:"nats"`
	// Topology shapes the streams (partitions, replicas, retention).
	Topology topology.Config `yaml:"topology"`
	// Catalog lists the event types. Empty: the embedded sample marketplace.
	Catalog catalog.Config `yaml:"catalog"`
	// Ingest, Enricher and Dispatcher configure the services.
	Ingest     ingest.Config     `yaml:"ingest"`
	Enricher   enricher.Config   `yaml:"enricher"`
	Dispatcher dispatcher.Config `yaml:"dispatcher"`
	// Inbound receives the CRM's webhooks and writes them to our database.
	Inbound inbound.Config `yaml:"inbound"`
	// Watchdog watches the lanes and services, acts and alerts.
	Watchdog watchdog.Config `yaml:"watchdog"`
	// Simulator is the built-in CRM simulator, started when
	// dispatcher.crm.url is empty.
	Simulator crmsim.Config `yaml:"simulator"`
	// Demo is the demo producer.
	Demo DemoConfig `yaml:"demo"`
	// Runtime tunes the Go runtime of `run`.
	Runtime RuntimeConfig `yaml:"runtime"`
	// ProgressInterval is how often `run` prints progress; a negative value
	// (e.g. -1s) turns it off. Default 5s.
	ProgressInterval time.Duration `yaml:"progress_interval"`
	// Ops is the operator HTTP listener (/metrics, /healthz, /readyz).
	Ops OpsConfig `yaml:"ops"`
	// Backfill lists the product-database queries `sluice backfill` streams.
	Backfill BackfillConfig `yaml:"backfill"`
	// Ledger is the delivery ledger (sluice audit, sluice trace): on by
	// default.
	Ledger ledger.Config `yaml:"ledger"`
}

// RuntimeConfig tunes the Go runtime. The garbage collector is a large
// share of Sluice's CPU per event: a higher gc_percent trades memory for
// throughput (measured with make bench: 400 gave ~1.3x events/s at ~1.6x
// peak RSS); memory_limit bounds the heap whatever gc_percent says.
type RuntimeConfig struct {
	// GCPercent sets the GC target percentage (GOGC). 0 keeps Go's default
	// (100, or the GOGC environment variable).
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimit is a soft heap limit in bytes (GOMEMLIMIT); 0 sets none.
	MemoryLimit int64 `yaml:"memory_limit"`
}

// LogConfig configures the logger.
type LogConfig struct {
	// Level is trace, debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is console (human) or json. Default console.
	Format string `yaml:"format"`
}

// NATSConfig selects the NATS server and how every connection to it (the
// services of `sluice run` and the operator commands) authenticates. The
// credentials and TLS keys apply to nats.url only; see natsconn.go and
// docs/scaling.md (Security of the bus).
type NATSConfig struct {
	// URL of an external NATS server (nats://host:4222, several comma
	// separated; tls://host:4222 requires TLS). Empty: start an embedded
	// server.
	URL string `yaml:"url"`
	// CredsFile is a .creds file (user JWT + nkey seed) for an external
	// server run with an operator/resolver. One auth method only: creds_file,
	// nkey_seed_file, user/password or token.
	CredsFile string `yaml:"creds_file"`
	// NkeySeedFile is a file holding a user nkey seed (SU...), for a server
	// whose users are nkeys.
	NkeySeedFile string `yaml:"nkey_seed_file"`
	// User and Password authenticate with a server's users list (see
	// deploy/nats/permissions.conf: sluice, producer, operator). Never
	// logged; `config print` masks the password.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Token authenticates with a server's authorization token. Masked like
	// the password.
	Token string `yaml:"token"`
	// TLS verifies the server (and presents a client certificate when the
	// server requires one). Setting any key turns TLS on.
	TLS NATSTLSConfig `yaml:"tls"`
	// InboxPrefix replaces "_INBOX" in the reply subjects of requests,
	// JetStream publish acks and consumer deliveries. A user whose
	// permissions allow only its own inbox (producer: _INBOX_producer,
	// operator: _INBOX_operator) must set it. Empty: "_INBOX".
	InboxPrefix string `yaml:"inbox_prefix"`
	// Embedded configures the embedded server (used when URL is empty):
	// loopback only, no auth, no TLS.
	Embedded embedded.Config `yaml:"embedded"`
}

// NATSTLSConfig is the client side of TLS to nats.url.
type NATSTLSConfig struct {
	// CAFile is the PEM CA bundle that signed the server's certificate.
	// Empty: the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's certificate and key (PEM), for
	// servers with verify: true (mutual TLS). Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name checked against the server's certificate when
	// it differs from the URL's host (e.g. URLs by IP address).
	ServerName string `yaml:"server_name"`
}

// DemoConfig configures the demo producer.
type DemoConfig struct {
	// Enabled is auto (on when the CRM simulator is used), true or false.
	Enabled string `yaml:"enabled"`
	// Rate is events per second. Default 50.
	Rate float64 `yaml:"rate"`
	// Keys is the number of customers/cars the demo spreads events over.
	// Default 40.
	Keys int `yaml:"keys"`
}

// Defaults returns the configuration with every default filled.
func Defaults() Config {
	return Config{DataDir: "./data", Ingest: ingest.DefaultConfig(), Ledger: ledger.DefaultConfig(),
		Dispatcher: dispatcher.DefaultConfig()}.withDefaults()
}

func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "console"
	}
	if c.NATS.Embedded.StoreDir == "" {
		c.NATS.Embedded.StoreDir = filepath.Join(c.DataDir, "jetstream")
	}
	c.NATS.Embedded = c.NATS.Embedded.WithDefaults()
	c.Topology = c.Topology.WithDefaults()
	c.Ingest = c.Ingest.WithDefaults()
	c.Enricher = c.Enricher.WithDefaults()
	if c.Enricher.DB.Driver == "sqlite" && c.Enricher.DB.DSN == "" {
		c.Enricher.DB.DSN = filepath.Join(c.DataDir, "product.db")
	}
	c.Dispatcher = c.Dispatcher.WithDefaults()
	c.Watchdog = c.Watchdog.WithDefaults()
	if c.Inbound.DB.DSN == "" && (c.Inbound.DB.Driver == "" || c.Inbound.DB.Driver == "sqlite") {
		c.Inbound.DB = c.Enricher.DB // the sample: one SQLite product database
	}
	if len(c.Inbound.Sources) == 0 && c.UsesSimulator() {
		// Demo only: the built-in CRM simulator signs with this secret.
		c.Inbound.Sources = []inbound.Source{{Name: "crm", Secrets: []string{DemoWebhookSecret}}}
		if c.Simulator.Webhooks.Profile == crmsim.WebhookProfileBareRecords {
			if c.Simulator.Webhooks.Secret == "" {
				c.Simulator.Webhooks.Secret = DemoCRMSecret
			}
			c.Inbound.Sources = []inbound.Source{bareRecordsSource(c.Simulator.Webhooks.WithDefaults())}
		}
	}
	c.Inbound = c.Inbound.WithDefaults()
	c.Simulator = c.Simulator.WithDefaults()
	if c.Demo.Enabled == "" {
		c.Demo.Enabled = "auto"
	}
	if c.Demo.Rate == 0 {
		c.Demo.Rate = 50
	}
	if c.Demo.Keys == 0 {
		c.Demo.Keys = 40
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 5 * time.Second
	}
	if c.Ops.Addr == "" {
		c.Ops.Addr = DefaultOpsAddr
	}
	c.Backfill = c.Backfill.WithDefaults()
	c.Ledger = c.Ledger.WithDefaults()
	return c
}

// UsesSimulator reports whether the built-in CRM simulator stands in for
// the CRM.
func (c Config) UsesSimulator() bool { return c.Dispatcher.CRM.URL == "" }

// DemoOn reports whether the demo producer runs.
func (c Config) DemoOn() bool {
	switch c.Demo.Enabled {
	case "true":
		return true
	case "false":
		return false
	}
	return c.UsesSimulator()
}

func (c Config) validate(target string) error {
	var errs []error
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not trace, debug, info, warn or error", c.Log.Level))
	}
	if c.Log.Format != "console" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format: %q is not console or json", c.Log.Format))
	}
	errs = append(errs, c.NATS.validate())
	switch c.Demo.Enabled {
	case "auto", "true", "false":
	default:
		errs = append(errs, fmt.Errorf("demo.enabled: %q is not auto, true or false", c.Demo.Enabled))
	}
	if c.Runtime.GCPercent < 0 {
		errs = append(errs, errors.New("runtime.gc_percent: must be >= 0 (0 keeps Go's default)"))
	}
	if c.Runtime.MemoryLimit < 0 {
		errs = append(errs, errors.New("runtime.memory_limit: must be >= 0 bytes (0 sets none)"))
	}
	if c.Demo.Rate < 0 {
		errs = append(errs, errors.New("demo.rate: must be >= 0"))
	}
	errs = append(errs, c.Topology.Validate())
	errs = append(errs, c.Backfill.Validate())
	errs = append(errs, c.Ledger.Validate())
	if len(c.Catalog.Types) > 0 {
		errs = append(errs, c.Catalog.Validate())
	}
	if wants(target, "ingest") {
		errs = append(errs, c.Ingest.Validate())
	}
	if wants(target, "enricher") {
		errs = append(errs, c.Enricher.Validate())
	}
	if wants(target, "watchdog") {
		errs = append(errs, c.Watchdog.Validate())
	}
	if c.runs(target, "inbound") {
		errs = append(errs, c.Inbound.Validate())
	}
	if wants(target, "dispatcher") {
		if c.UsesSimulator() {
			errs = append(errs, c.Simulator.Validate())
			d := c.Dispatcher
			d.CRM.URL = "http://127.0.0.1:1" // checked for the rest; the simulator gives the real URL
			errs = append(errs, d.Validate())
		} else {
			errs = append(errs, c.Dispatcher.Validate())
		}
	}
	return errors.Join(errs...)
}

// LoadConfig reads defaults, then the file (if any), then SLUICE_*
// environment variables, and validates the result for target.
func LoadConfig(path, target string) (Config, error) {
	// Ingest's listen address, ledger.enabled and
	// dispatcher.step_aside.enabled default before the file
	// is read, so that an explicit empty http_addr or false turns them off.
	c := Config{Ingest: ingest.DefaultConfig(), Ledger: ledger.DefaultConfig(), Dispatcher: dispatcher.DefaultConfig()}
	if err := config.Load(path, os.Environ(), EnvPrefix, &c); err != nil {
		return c, err
	}
	c = c.withDefaults()
	if err := c.validate(target); err != nil {
		return c, fmt.Errorf("%w:\n%w", config.ErrInvalid, err)
	}
	return c, nil
}

// Targets lists the values of run --target.
var Targets = []string{"all", "ingest", "enricher", "dispatcher", "inbound", "watchdog"}

// DemoWebhookSecret signs the simulator's webhooks when no inbound source
// is configured and the simulator stands in for the CRM. It is public:
// never use it with a real CRM.
const DemoWebhookSecret = "whsec_c2x1aWNlLWRlbW8td2ViaG9vay1zZWNyZXQ="

func wants(target, service string) bool { return target == "all" || target == service }

// runs reports whether target runs service. Under "all", inbound runs only
// when a webhook source is configured (or the simulator's demo one is).
func (c Config) runs(target, service string) bool {
	if service == "inbound" && target == "all" {
		return len(c.Inbound.Sources) > 0
	}
	return wants(target, service)
}

// BackfillConfig lists the named queries of `sluice backfill`.
type BackfillConfig struct {
	// Queries are the backfill queries, chosen by name with --query.
	Queries []BackfillQuery `yaml:"queries"`
}

// BackfillQuery is one backfill source: a SELECT on the product database
// (enricher.db) read page by page in cursor order (keyset pagination).
type BackfillQuery struct {
	// Name selects the query (--query) and is its cursor's key in the
	// <stream_prefix>_backfill KV bucket: [A-Za-z0-9_-]. Required.
	Name string `yaml:"name"`
	// SQL is a SELECT with exactly one :cursor placeholder where a WHERE
	// condition goes (`... WHERE :cursor` or `... WHERE active AND :cursor`).
	// Backfill replaces it with the keyset condition (`1=1` on the first
	// page, `(c1 > ?)` or `(c1 > ? OR (c1 = ? AND c2 > ?))` after) and
	// appends `ORDER BY <cursor> LIMIT <batch_size>`; so no ORDER BY or
	// LIMIT of its own. Every result column becomes a field of the event's
	// data. Required.
	SQL string `yaml:"sql"`
	// Type is the event type sent; --type overrides it. One of them is
	// required.
	Type string `yaml:"type"`
	// KeyColumn is the result column holding the event key. Required.
	KeyColumn string `yaml:"key_column"`
	// Cursor lists the columns ordering the rows, unique together and never
	// NULL (e.g. [id] or [updated_at, id]), as the SQL names them
	// (`c.id`); the value is read from the result column after the last
	// dot. Required.
	Cursor []string `yaml:"cursor"`
	// VersionColumn is the result column holding the row's version
	// (updated_at or a version counter): part of the event id. Required.
	VersionColumn string `yaml:"version_column"`
	// BatchSize is the rows per page (one query, one publish wave, one
	// cursor save). Default 500.
	BatchSize int `yaml:"batch_size"`
	// Rate caps events per second so live traffic keeps its latency.
	// Default 500 (0 means the default). --rate overrides it; --rate 0 is
	// unlimited.
	Rate float64 `yaml:"rate"`
}

var (
	backfillNameRe   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	backfillColumnRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)
)

// WithDefaults fills in each query's batch_size and rate.
func (c BackfillConfig) WithDefaults() BackfillConfig {
	if len(c.Queries) == 0 {
		return c
	}
	qs := slices.Clone(c.Queries)
	for i := range qs {
		if qs[i].BatchSize == 0 {
			qs[i].BatchSize = 500
		}
		if qs[i].Rate == 0 {
			qs[i].Rate = 500
		}
	}
	c.Queries = qs
	return c
}

// Validate reports every bad query field, named by its key.
func (c BackfillConfig) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, q := range c.Queries {
		k := fmt.Sprintf("backfill.queries[%d]", i)
		if !backfillNameRe.MatchString(q.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q must be 1-64 of A-Z a-z 0-9 _ -", k, q.Name))
		} else if seen[q.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", k, q.Name))
		}
		seen[q.Name] = true
		if n := strings.Count(q.SQL, ":cursor"); n != 1 {
			errs = append(errs, fmt.Errorf("%s.sql: must hold exactly one :cursor placeholder (has %d)", k, n))
		}
		if q.Type != "" && !envelope.ValidType(q.Type) {
			errs = append(errs, fmt.Errorf("%s.type: %q must be 1-64 of A-Z a-z 0-9 _ -", k, q.Type))
		}
		if q.KeyColumn == "" {
			errs = append(errs, fmt.Errorf("%s.key_column: required", k))
		}
		if q.VersionColumn == "" {
			errs = append(errs, fmt.Errorf("%s.version_column: required", k))
		}
		if len(q.Cursor) == 0 {
			errs = append(errs, fmt.Errorf("%s.cursor: required (the columns ordering the rows)", k))
		}
		for j, col := range q.Cursor {
			if !backfillColumnRe.MatchString(col) {
				errs = append(errs, fmt.Errorf("%s.cursor[%d]: %q must be a column name (optionally table.column)", k, j, col))
			}
		}
		if q.BatchSize < 1 {
			errs = append(errs, fmt.Errorf("%s.batch_size: %d must be >= 1", k, q.BatchSize))
		}
		if q.Rate < 0 {
			errs = append(errs, fmt.Errorf("%s.rate: must be >= 0 events/s (0: the default, 500)", k))
		}
	}
	return errors.Join(errs...)
}
