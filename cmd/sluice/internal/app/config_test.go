package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/envelope"
)

// repoRoot is the workspace root, where sluice.example.yaml lives and from
// where its schemas_dir resolves.
const repoRoot = "../../../.."

var examplePath = filepath.Join(repoRoot, "sluice.example.yaml")

// cleanEnv unsets every SLUICE_* variable for the test (restored after it),
// so the developer's or CI's environment cannot change what LoadConfig sees.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, EnvPrefix) {
			t.Setenv(k, "") // registers the restore
			if err := os.Unsetenv(k); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// writeConfig writes a YAML file into a fresh temp dir and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigDefaults(t *testing.T) {
	cleanEnv(t)
	c, err := LoadConfig("", "all")
	if err != nil {
		t.Fatalf("LoadConfig with no file: %v", err)
	}
	tests := []struct {
		key  string
		got  any
		want any
	}{
		{"data_dir", c.DataDir, "./data"},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "console"},
		{"nats.url", c.NATS.URL, ""},
		{"nats.embedded.listen", c.NATS.Embedded.Listen, "127.0.0.1:4250"},
		{"nats.embedded.store_dir", c.NATS.Embedded.StoreDir, filepath.Join("data", "jetstream")},
		{"topology.prefix", c.Topology.Prefix, "sluice"},
		{"topology.partitions", c.Topology.Partitions, 16},
		{"topology.replicas", c.Topology.Replicas, 1},
		{"topology.ack_wait", c.Topology.AckWait, 30 * time.Second},
		{"topology.events_max_age", c.Topology.EventsMaxAge, 168 * time.Hour},
		{"topology.max_bytes", c.Topology.MaxBytes, int64(-1)},
		{"catalog.types", len(c.Catalog.Types), 0},
		{"ingest.http_addr", c.Ingest.HTTPAddr, "127.0.0.1:8080"},
		{"ingest.max_body_bytes", c.Ingest.MaxBodyBytes, int64(1 << 20)},
		{"ingest.max_batch", c.Ingest.MaxBatch, 1000},
		{"enricher.db.driver", c.Enricher.DB.Driver, "sqlite"},
		{"enricher.db.dsn", c.Enricher.DB.DSN, filepath.Join("data", "product.db")},
		{"enricher.db.max_open_conns", c.Enricher.DB.MaxOpenConns, 8},
		{"enricher.lookup_grace", c.Enricher.LookupGrace, 30 * time.Second},
		{"dispatcher.crm.url", c.Dispatcher.CRM.URL, ""},
		{"dispatcher.crm.timeout", c.Dispatcher.CRM.Timeout, 10 * time.Second},
		{"dispatcher.retry.tries", c.Dispatcher.Retry.Tries, 3},
		{"dispatcher.retry.delay", c.Dispatcher.Retry.Delay, 2 * time.Second},
		{"dispatcher.pause", c.Dispatcher.Pause, 10 * time.Second},
		{"simulator.addr", c.Simulator.Addr, "127.0.0.1:0"},
		{"demo.enabled", c.Demo.Enabled, "auto"},
		{"demo.rate", c.Demo.Rate, 50.0},
		{"demo.keys", c.Demo.Keys, 40},
		{"progress_interval", c.ProgressInterval, 5 * time.Second},
		{"UsesSimulator()", c.UsesSimulator(), true},
		{"DemoOn()", c.DemoOn(), true},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.key, tt.got, tt.want)
		}
	}
	// `config print` with no file shows what Defaults returns.
	if d := Defaults(); !reflect.DeepEqual(d, c) {
		t.Errorf("Defaults() differs from LoadConfig(\"\", \"all\"):\n%+v\n%+v", d, c)
	}
}

// TestLoadConfig covers the file, the environment, validation per target
// and error messages naming the key.
func TestLoadConfig(t *testing.T) {
	const crm = "dispatcher: {crm: {url: \"https://crm.example.com\"}}\n"
	tests := []struct {
		name string
		yaml string // "" loads no file
		// missing passes the path of a file that does not exist.
		missing bool
		env     map[string]string
		target  string // default "all"
		// On success check inspects the result; on failure the error must
		// wrap config.ErrInvalid and contain every string of wantErr.
		check   func(t *testing.T, c Config)
		wantErr []string
	}{
		{
			name: "values from the file",
			yaml: "data_dir: /srv/sluice\nlog: {level: debug, format: json}\ntopology: {partitions: 8, ack_wait: 45s}\n" + crm,
			check: func(t *testing.T, c Config) {
				eq(t, "log.level", c.Log.Level, "debug")
				eq(t, "log.format", c.Log.Format, "json")
				eq(t, "topology.partitions", c.Topology.Partitions, 8)
				eq(t, "topology.ack_wait", c.Topology.AckWait, 45*time.Second)
				eq(t, "nats.embedded.store_dir", c.NATS.Embedded.StoreDir, filepath.Join("/srv/sluice", "jetstream"))
				eq(t, "enricher.db.dsn", c.Enricher.DB.DSN, filepath.Join("/srv/sluice", "product.db"))
				eq(t, "UsesSimulator()", c.UsesSimulator(), false)
				eq(t, "DemoOn()", c.DemoOn(), false)
			},
		},
		{
			name: "env overrides win over the file",
			yaml: "nats: {url: \"nats://file:4222\"}\ntopology: {partitions: 8}\nprogress_interval: 10s\n" +
				"dispatcher:\n  crm:\n    url: https://file.example.com\n    headers: {Accept: application/json}\n",
			env: map[string]string{
				"SLUICE_NATS_URL":                             "nats://env-1:4222,nats://env-2:4222",
				"SLUICE_TOPOLOGY_PARTITIONS":                  "32",
				"SLUICE_PROGRESS_INTERVAL":                    "-1s",
				"SLUICE_DISPATCHER_CRM_URL":                   "https://env.example.com",
				"SLUICE_DISPATCHER_CRM_HEADERS_AUTHORIZATION": "Bearer from-env",
				"SLUICE_DISPATCHER_STATUS_POLICY_422":         "park",
				"SLUICE_NATS_EMBEDDED_SYNC_ALWAYS":            "true",
			},
			check: func(t *testing.T, c Config) {
				eq(t, "nats.url", c.NATS.URL, "nats://env-1:4222,nats://env-2:4222")
				eq(t, "topology.partitions", c.Topology.Partitions, 32)
				eq(t, "progress_interval", c.ProgressInterval, -time.Second)
				eq(t, "dispatcher.crm.url", c.Dispatcher.CRM.URL, "https://env.example.com")
				eq(t, "dispatcher.crm.headers", c.Dispatcher.CRM.Headers,
					map[string]string{"Accept": "application/json", "AUTHORIZATION": "Bearer from-env"})
				eq(t, "dispatcher.status_policy", c.Dispatcher.StatusPolicy, map[string]string{"422": "park"})
				eq(t, "nats.embedded.sync_always", c.NATS.Embedded.SyncAlways, true)
			},
		},
		{
			name: "env data_dir moves the derived paths",
			env:  map[string]string{"SLUICE_DATA_DIR": "/var/lib/sluice"},
			check: func(t *testing.T, c Config) {
				eq(t, "nats.embedded.store_dir", c.NATS.Embedded.StoreDir, "/var/lib/sluice/jetstream")
				eq(t, "enricher.db.dsn", c.Enricher.DB.DSN, "/var/lib/sluice/product.db")
			},
		},
		{
			name:   "explicit empty http_addr keeps HTTP off",
			yaml:   "ingest: {http_addr: \"\"}\n",
			target: "ingest",
			check: func(t *testing.T, c Config) {
				eq(t, "ingest.http_addr", c.Ingest.HTTPAddr, "")
				eq(t, "ingest.max_batch", c.Ingest.MaxBatch, 1000) // the other defaults still apply
			},
		},
		{
			name:   "empty http_addr from the environment keeps HTTP off",
			env:    map[string]string{"SLUICE_INGEST_HTTP_ADDR": ""},
			target: "ingest",
			check:  func(t *testing.T, c Config) { eq(t, "ingest.http_addr", c.Ingest.HTTPAddr, "") },
		},
		{
			// Zero means "use the default" for every numeric key; see
			// docs/configuration.md, "Defaults for zero values".
			name: "zero values take the defaults",
			yaml: "topology: {partitions: 0, max_bytes: 0}\ndispatcher: {crm: {url: \"https://crm.example.com\"}, retry: {tries: 0}}\n",
			check: func(t *testing.T, c Config) {
				eq(t, "topology.partitions", c.Topology.Partitions, 16)
				eq(t, "topology.max_bytes", c.Topology.MaxBytes, int64(-1))
				eq(t, "dispatcher.retry.tries", c.Dispatcher.Retry.Tries, 3)
			},
		},
		{
			name: "yaml booleans are accepted for demo.enabled",
			yaml: "demo: {enabled: false}\n",
			check: func(t *testing.T, c Config) {
				eq(t, "demo.enabled", c.Demo.Enabled, "false")
				eq(t, "DemoOn()", c.DemoOn(), false)
			},
		},
		{
			name:   "a section the target does not use is not validated",
			yaml:   "ingest: {http_addr: nonsense}\n",
			target: "dispatcher",
			check:  func(t *testing.T, c Config) { eq(t, "ingest.http_addr", c.Ingest.HTTPAddr, "nonsense") },
		},
		{
			name:    "... but it is for its own target",
			yaml:    "ingest: {http_addr: nonsense}\n",
			target:  "ingest",
			wantErr: []string{"ingest.http_addr", "nonsense"},
		},
		{
			name:    "unknown top-level key",
			yaml:    "log: {level: info}\nbogus_key: 1\n",
			wantErr: []string{"bogus_key", "line 2"},
		},
		{
			name:    "unknown nested key",
			yaml:    "topology:\n  partitionz: 3\n",
			wantErr: []string{"partitionz", "topology.Config"},
		},
		{
			name:    "topology.partitions out of range",
			yaml:    "topology: {partitions: -1}\n",
			wantErr: []string{"topology.partitions", "1..1024"},
		},
		{name: "log.level", yaml: "log: {level: loud}\n", wantErr: []string{"log.level", "loud"}},
		{name: "runtime.gc_percent", yaml: "runtime: {gc_percent: -5}\n", wantErr: []string{"runtime.gc_percent"}},
		{name: "runtime.memory_limit", yaml: "runtime: {memory_limit: -1}\n", wantErr: []string{"runtime.memory_limit"}},
		{name: "demo.enabled", yaml: "demo: {enabled: maybe}\n", wantErr: []string{"demo.enabled", "maybe"}},
		{name: "missing file", missing: true, wantErr: []string{"no such file"}},
		{
			name:    "dispatcher.retry.tries with a crm url",
			yaml:    "dispatcher: {crm: {url: \"https://crm.example.com\"}, retry: {tries: -1}}\n",
			target:  "dispatcher",
			wantErr: []string{"dispatcher.retry.tries", ">= 1"},
		},
		{
			name:    "dispatcher.retry.tries checked with the simulator too",
			yaml:    "dispatcher: {retry: {tries: -2}}\n",
			target:  "dispatcher",
			wantErr: []string{"dispatcher.retry.tries"},
		},
		{
			name:    "credentials in the crm url",
			yaml:    "dispatcher: {crm: {url: \"https://user:secret@crm.example.com\"}}\n",
			wantErr: []string{"dispatcher.crm.url", "credentials"},
		},
		{
			name:    "reserved crm header",
			yaml:    crm,
			env:     map[string]string{"SLUICE_DISPATCHER_CRM_HEADERS_IDEMPOTENCY-KEY": "x"},
			wantErr: []string{"dispatcher.crm.headers.IDEMPOTENCY-KEY"},
		},
		{name: "bare number for a duration", yaml: "topology: {ack_wait: 30}\n", wantErr: []string{"time.Duration"}},
		{
			name:    "unparsable env value names key and variable",
			env:     map[string]string{"SLUICE_TOPOLOGY_PARTITIONS": "many"},
			wantErr: []string{"topology.partitions", "SLUICE_TOPOLOGY_PARTITIONS"},
		},
		{name: "env value fails validation naming the key", env: map[string]string{"SLUICE_LOG_FORMAT": "xml"}, wantErr: []string{"log.format"}},
		{
			name:    "several problems are reported together",
			yaml:    "log: {level: loud}\ntopology: {replicas: 2}\ndemo: {rate: -1}\n",
			wantErr: []string{"log.level", "topology.replicas", "demo.rate"},
		},
		{
			name: "catalog type problems name the type's key",
			yaml: "catalog:\n  types:\n    order:\n      crm: {mode: create, path: /orders}\n" +
				"      lookups: [{name: cust, table: \"customers; drop\", key_column: id, columns: [name], from: .data.id}]\n",
			target:  "dispatcher",
			wantErr: []string{"catalog.types.order.crm.object", "catalog.types.order.lookups[0].table"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := ""
			switch {
			case tt.missing:
				path = filepath.Join(t.TempDir(), "missing.yaml")
			case tt.yaml != "":
				path = writeConfig(t, tt.yaml)
			}
			target := tt.target
			if target == "" {
				target = "all"
			}
			c, err := LoadConfig(path, target)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("LoadConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("LoadConfig succeeded, want an error containing %q", tt.wantErr)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error does not wrap config.ErrInvalid: %v", err)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not contain %q:\n%v", s, err)
				}
			}
		})
	}
}

// TestExampleConfig loads sluice.example.yaml for every target, and checks
// that its catalog compiles and its jq mappings work on sample events.
func TestExampleConfig(t *testing.T) {
	cleanEnv(t)
	for _, target := range Targets {
		c, err := LoadConfig(examplePath, target)
		if err != nil {
			t.Fatalf("target %s: %v", target, err)
		}
		eq(t, "nats.url", c.NATS.URL, "nats://nats-1.internal:4222,nats://nats-2.internal:4222,nats://nats-3.internal:4222")
		eq(t, "topology.partitions", c.Topology.Partitions, 32)
		eq(t, "topology.replicas", c.Topology.Replicas, 3)
		eq(t, "enricher.db.driver", c.Enricher.DB.Driver, "postgres")
		eq(t, "catalog.types", c.Catalog.Names(), []string{"subscription_changed", "user_signed_up"})
		eq(t, "UsesSimulator()", c.UsesSimulator(), false)
		eq(t, "DemoOn()", c.DemoOn(), false)
		if _, ok := c.Dispatcher.CRM.Headers["Authorization"]; ok {
			t.Error("the example must not hold the Authorization header; it comes from the environment")
		}
	}

	t.Run("authorization from the environment", func(t *testing.T) {
		t.Setenv("SLUICE_DISPATCHER_CRM_HEADERS_AUTHORIZATION", "Bearer test-token")
		c, err := LoadConfig(examplePath, "dispatcher")
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "dispatcher.crm.headers", c.Dispatcher.CRM.Headers,
			map[string]string{"Accept": "application/json", "AUTHORIZATION": "Bearer test-token"})
	})

	t.Run("catalog and mappings", func(t *testing.T) {
		t.Chdir(repoRoot) // schemas_dir is relative to the working directory
		c, err := LoadConfig("sluice.example.yaml", "all")
		if err != nil {
			t.Fatal(err)
		}
		cat, err := loadCatalog(c.Catalog)
		if err != nil {
			t.Fatalf("catalog: %v", err)
		}
		events := map[string]string{
			"user_signed_up":       `{"user_id": 7, "account_id": 42, "email": "asha@example.com", "name": "Asha Rao", "channel": "sso"}`,
			"subscription_changed": `{"account_id": 42, "plan_id": 3, "previous_plan_id": null, "status": "active", "seats": 5}`,
		}
		rows := map[string]any{
			"account":       map[string]any{"name": "Acme", "domain": "acme.example", "country": "IN"},
			"plan":          map[string]any{"name": "Team", "monthly_price_cents": 4900},
			"previous_plan": nil,
		}
		wantBody := map[string]map[string]any{
			"user_signed_up":       {"email": "asha@example.com", "company_name": "Acme", "signup_channel": "sso", "external_id": "user:7"},
			"subscription_changed": {"name": "Acme", "plan": "Team", "mrr_cents": 24500, "previous_plan": nil, "external_id": "account:42"},
		}
		for name, data := range events {
			env := &envelope.Envelope{ID: "ev-1", Type: name, Source: "test",
				OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Data: json.RawMessage(data)}
			if err := cat.Prepare(env); err != nil {
				t.Fatalf("%s: Prepare: %v", name, err)
			}
			eq(t, name+" key", env.Key, "account:42")
			ct, _ := cat.Type(name)
			in, err := catalog.AsJQ(env)
			if err != nil {
				t.Fatal(err)
			}
			for i, l := range ct.Def.Lookups {
				v := runJQ(t, l.From, in)
				if v == nil && !l.Optional {
					t.Errorf("%s.lookups[%d].from gave null", name, i)
				}
			}
			if ct.Def.CRM.IDKey != "" {
				eq(t, name+" crm.id_key", runJQ(t, ct.Def.CRM.IDKey, in), "user:7")
			}
			runJQ(t, ct.Def.CRM.IDFrom, map[string]any{"data": map[string]any{"id": "crm-1"}})
			body, err := json.Marshal(runJQ(t, ct.Def.Body, map[string]any{"event": in, "lookups": rows}))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%s body is not an object: %s", name, body)
			}
			for k, want := range wantBody[name] {
				if w, ok := want.(int); ok {
					want = float64(w)
				}
				if !reflect.DeepEqual(got[k], want) {
					t.Errorf("%s body[%s] = %#v, want %#v (body %s)", name, k, got[k], want, body)
				}
			}
		}
	})
}

// runJQ compiles expr and returns its first output, failing on an error.
func runJQ(t *testing.T, expr string, in any) any {
	t.Helper()
	code, err := catalog.CompileJQ(expr)
	if err != nil {
		t.Fatalf("compile %q: %v", expr, err)
	}
	v, ok := code.Code().Run(in).Next()
	if !ok {
		t.Fatalf("%q gave no output", expr)
	}
	if err, ok := v.(error); ok {
		t.Fatalf("%q: %v", expr, err)
	}
	return v
}

// TestConfigCommands runs `sluice config …` through the cobra root.
func TestConfigCommands(t *testing.T) {
	bad := "log: {level: loud}\n"
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		chdir   bool // run from the repository root
		want    []string
		notWant []string
		wantErr string
	}{
		{
			name: "env lists the variables",
			args: []string{"config", "env"},
			want: []string{"SLUICE_NATS_URL", "SLUICE_DISPATCHER_CRM_URL", "SLUICE_DISPATCHER_CRM_HEADERS",
				"SLUICE_TOPOLOGY_PARTITIONS", "SLUICE_INGEST_HTTP_ADDR", "nats.embedded.sync_always"},
			notWant: []string{"catalog.types", "ingest.tokens"},
		},
		{
			name:  "check the example for the dispatcher",
			args:  []string{"config", "check", "--config", "sluice.example.yaml", "--target", "dispatcher"},
			chdir: true,
			want:  []string{"configuration OK"},
		},
		{
			name:    "check names the bad key",
			args:    []string{"config", "check", "--config", "BAD"},
			wantErr: "log.level",
		},
		{
			name:    "print fails on a bad file too",
			args:    []string{"config", "print", "--config", "BAD"},
			wantErr: "log.level",
		},
		{
			name:    "print shows defaults and redacts headers",
			args:    []string{"config", "print"},
			env:     map[string]string{"SLUICE_DISPATCHER_CRM_HEADERS_AUTHORIZATION": "Bearer s3cret-value"},
			want:    []string{"partitions: 16", "http_addr: 127.0.0.1:8080", "AUTHORIZATION: <redacted>"},
			notWant: []string{"s3cret-value"},
		},
		{
			name: "print redacts the CRM auth secrets",
			args: []string{"config", "print"},
			env: map[string]string{"SLUICE_DISPATCHER_CRM_AUTH_PASSWORD": "pw-s3cret",
				"SLUICE_DISPATCHER_CRM_AUTH_OAUTH2_CLIENT_SECRET": "cs-s3cret", "SLUICE_DISPATCHER_CRM_AUTH_OAUTH2_REFRESH_TOKEN": "rt-s3cret"},
			want:    []string{"client_secret: <redacted>", "refresh_token: <redacted>", "password: <redacted>"},
			notWant: []string{"pw-s3cret", "cs-s3cret", "rt-s3cret"},
		},
		{
			name:    "check refuses an unknown target",
			args:    []string{"config", "check", "--target", "bogus"},
			wantErr: "--target",
		},
		{
			name: "print redacts tokens and a DSN with credentials",
			args: []string{"config", "print"},
			env: map[string]string{"SLUICE_ENRICHER_DB_DRIVER": "postgres",
				"SLUICE_ENRICHER_DB_DSN": "postgres://app:pg-s3cret@db:5432/shop"},
			want:    []string{"<redacted: may hold credentials>"},
			notWant: []string{"pg-s3cret"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := append([]string(nil), tt.args...)
			for i, a := range args {
				if a == "BAD" {
					args[i] = writeConfig(t, bad)
				}
			}
			if tt.chdir {
				t.Chdir(repoRoot)
			}
			var stdout, stderr bytes.Buffer
			root := newRoot(&stdout, &stderr)
			root.SetArgs(args)
			err := root.Execute()
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want config.ErrInvalid naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v (stderr %q)", err, stderr.String())
			}
			for _, s := range tt.want {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tt.notWant {
				if strings.Contains(stdout.String(), s) {
					t.Errorf("output contains %q:\n%s", s, stdout.String())
				}
			}
		})
	}
}

// TestMainExitCode checks the documented exit status 2 for a bad config.
func TestMainExitCode(t *testing.T) {
	cleanEnv(t)
	tests := []struct {
		name string
		yaml string
		want int
	}{
		{"valid", "log: {level: warn}\n", 0},
		{"invalid value", "topology: {partitions: -1}\n", 2},
		{"unknown key", "nope: 1\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Main([]string{"config", "check", "--config", writeConfig(t, tt.yaml)}); got != tt.want {
				t.Errorf("exit status %d, want %d", got, tt.want)
			}
		})
	}
}

func eq(t *testing.T, key string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", key, got, want)
	}
}
