package app

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/redact"
)

// errMappingTests marks failed mapping tests (config check exits 1).
var errMappingTests = errors.New("mapping tests failed")

func tryCmd() *cobra.Command {
	var cfgPath, typ string
	cmd := &cobra.Command{
		Use:   "try EVENT.json",
		Short: "Show the CRM request(s) one event would cause, sending nothing",
		Long: "Runs one event through what Sluice does with it — the type's JSON Schema and key, the\n" +
			"lookups in the product database, the jq mapping — and prints the exact HTTP request(s) the\n" +
			"dispatcher would send to the CRM: method, URL, headers (secrets redacted) and body. Nothing\n" +
			"is published or sent. EVENT.json is an envelope ({id, type, key, occurred_at, data}) or, with\n" +
			"--type, just the data object. A required lookup row that is missing fails at once.",
		Example: "  sluice try event.json\n  sluice try --type customer_signed_up data.json --config sluice.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := LoadConfig(cfgPath, "all")
			if err != nil {
				return err
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			env, err := eventOf(b, typ)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			ctx, stop := signalContext()
			defer stop()
			tr, err := newTrier(ctx, c)
			if err != nil {
				return err
			}
			defer tr.close()
			req, err := tr.try(ctx, env)
			if err != nil {
				return err
			}
			crm := c.Dispatcher.CRM
			if crm.URL == "" { // run starts the CRM simulator
				crm.URL = "http://" + c.Simulator.Addr
				if strings.HasSuffix(c.Simulator.Addr, ":0") {
					crm.URL = "http://crm-simulator" // its port is picked at start
				}
				fmt.Fprintln(cmd.OutOrStdout(), "(no dispatcher.crm.url: the built-in CRM simulator would receive it)")
			}
			return writePreviews(cmd.OutOrStdout(), req, dispatcher.PreviewRequests(crm, req), redact.New(c.Ledger.SensitiveFields...))
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file")
	cmd.Flags().StringVar(&typ, "type", "", "the event type, when EVENT.json holds only the data")
	return cmd
}

// eventOf reads an envelope, or with typ the data of one.
func eventOf(b []byte, typ string) (*envelope.Envelope, error) {
	if typ != "" {
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(b, &probe); err != nil {
			return nil, fmt.Errorf("not a JSON object: %w", err)
		}
		if _, isEnv := probe["data"]; !isEnv {
			return &envelope.Envelope{ID: "try-1", Type: typ, Source: "sluice try",
				OccurredAt: time.Now().UTC().Truncate(time.Second), Data: b}, nil
		}
	}
	e, err := envelope.Decode(b)
	if err != nil {
		return nil, err
	}
	if typ != "" {
		e.Type = typ
	}
	if e.ID == "" {
		e.ID = "try-1"
	}
	if e.OccurredAt.IsZero() {
		e.OccurredAt = time.Now().UTC().Truncate(time.Second)
	}
	return e, nil
}

// trier runs events through the enricher's Try on the configured catalog
// and product database.
type trier struct {
	c   Config
	cat *catalog.Catalog
	db  *sql.DB
	d   productdb.Dialect
}

func newTrier(ctx context.Context, c Config) (*trier, error) {
	cat, err := loadCatalog(c.Catalog)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return nil, err
	}
	db, d, err := openProductDB(ctx, c, zerolog.Nop())
	if err != nil {
		return nil, err
	}
	return &trier{c: c, cat: cat, db: db, d: d}, nil
}

func (t *trier) close() { _ = t.db.Close() }

func (t *trier) try(ctx context.Context, env *envelope.Envelope) (crmreq.Request, error) {
	return enricher.Try(ctx, t.c.Enricher, enricher.Deps{Catalog: t.cat, DB: t.db, Dialect: t.d}, env)
}

// writePreviews prints the request(s) like an HTTP message; the body's
// sensitive fields (ledger.sensitive_fields and secret-like names) are
// shown as [redacted], as sluice trace does.
func writePreviews(w io.Writer, req crmreq.Request, ps []dispatcher.Preview, r *redact.Redactor) error {
	fmt.Fprintf(w, "event %s: type %s, key %s — valid, looked up, mapped (mode %s", req.EventID, req.Type, req.Key, req.Mode)
	if req.Object != "" {
		fmt.Fprintf(w, ", CRM object %s, id key %s", req.Object, req.IDKey)
	}
	fmt.Fprintln(w, "). Nothing was sent.")
	for _, p := range ps {
		fmt.Fprintln(w)
		if p.When != "" {
			fmt.Fprintf(w, "# when %s:\n", p.When)
		}
		fmt.Fprintf(w, "%s %s\n", p.Method, p.URL)
		keys := make([]string, 0, len(p.Header))
		for k := range p.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "%s: %s\n", k, strings.Join(p.Header[k], ", "))
		}
		fmt.Fprintln(w)
		var pretty bytes.Buffer
		body := r.JSON(p.Body)
		if json.Indent(&pretty, body, "", "  ") != nil {
			pretty.Reset()
			pretty.Write(body)
		}
		fmt.Fprintln(w, pretty.String())
	}
	return nil
}

// MappingTest is one test of a file in <schemas_dir>/tests/: an input
// event and the CRM request it must cause.
type MappingTest struct {
	Name   string         `yaml:"name"`
	Event  map[string]any `yaml:"event"`
	Expect struct {
		Method string `yaml:"method"`
		Path   string `yaml:"path"`
		// Body is compared as JSON (key order and spacing do not matter).
		Body any `yaml:"body"`
	} `yaml:"expect"`
}

// mappingTestsDir is where config check looks for mapping tests.
func mappingTestsDir(c catalog.Config) string {
	if c.SchemasDir == "" {
		return ""
	}
	return filepath.Join(c.SchemasDir, "tests")
}

// runMappingTests runs every test of <schemas_dir>/tests/*.yaml, prints
// one line per test and a diff for each failure, and returns
// errMappingTests when one failed. No directory: nothing to do.
func runMappingTests(ctx context.Context, w io.Writer, c Config) error {
	dir := mappingTestsDir(c.Catalog)
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if dir == "" || len(files) == 0 {
		return nil
	}
	tr, err := newTrier(ctx, c)
	if err != nil {
		return err
	}
	defer tr.close()
	var passed, failed int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var tests []MappingTest
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&tests); err != nil {
			return fmt.Errorf("%w: %s: %w (a list of {name, event, expect: {method, path, body}})", config.ErrInvalid, f, err)
		}
		for i, tc := range tests {
			name := fmt.Sprintf("%s #%d %s", filepath.Base(f), i+1, tc.Name)
			if diff := runMappingTest(ctx, tr, c, tc); diff != "" {
				failed++
				fmt.Fprintf(w, "FAIL mapping test %s\n%s\n", name, diff)
			} else {
				passed++
				fmt.Fprintf(w, "ok   mapping test %s\n", name)
			}
		}
	}
	fmt.Fprintf(w, "mapping tests: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d", errMappingTests, failed, passed+failed)
	}
	return nil
}

// runMappingTest returns "" when tc passes, else what differs.
func runMappingTest(ctx context.Context, tr *trier, c Config, tc MappingTest) string {
	raw, err := json.Marshal(tc.Event)
	if err != nil {
		return "event: " + err.Error()
	}
	env, err := eventOf(raw, "")
	if err != nil {
		return "event: " + err.Error()
	}
	req, err := tr.try(ctx, env)
	if err != nil {
		return "  " + err.Error()
	}
	var out []string
	if tc.Expect.Method != "" && tc.Expect.Method != req.Method {
		out = append(out, fmt.Sprintf("  method: expected %s, got %s", tc.Expect.Method, req.Method))
	}
	if tc.Expect.Path != "" && tc.Expect.Path != req.Path {
		out = append(out, fmt.Sprintf("  path: expected %s, got %s", tc.Expect.Path, req.Path))
	}
	if tc.Expect.Body != nil {
		want, _ := json.MarshalIndent(tc.Expect.Body, "", "  ")
		var got any
		_ = json.Unmarshal(req.Body, &got)
		gotB, _ := json.MarshalIndent(got, "", "  ")
		if !bytes.Equal(want, gotB) {
			d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: difflib.SplitLines(string(want) + "\n"),
				B: difflib.SplitLines(string(gotB) + "\n"), FromFile: "expected body", ToFile: "body", Context: 2})
			out = append(out, "  "+strings.ReplaceAll(strings.TrimRight(d, "\n"), "\n", "\n  "))
		}
	}
	return strings.Join(out, "\n")
}
