package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/xuri/excelize/v2"
	"gopkg.in/yaml.v3"

	"sluice.dev/ingest/client"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

// errImportRows means some rows of the file are invalid: the per-row report
// was printed and nothing was sent. The user fixes the rows and runs again.
var errImportRows = errors.New("import: invalid rows")

// importMapping is a --map file: how columns become data fields, e.g.
// `columns: {"Customer ID": {field: customer_id, type: int}, Notes: {skip: true}}`.
type importMapping struct {
	// Columns maps a header to its field; unlisted columns keep their header
	// as the field name (unless OnlyMapped).
	Columns map[string]importColumn `yaml:"columns"`
	// OnlyMapped drops every column not listed in Columns.
	OnlyMapped bool `yaml:"only_mapped"`
}

// importColumn is one column's mapping.
type importColumn struct {
	// Field is the data field (default: the header).
	Field string `yaml:"field"`
	// Type converts the cell: int, float, bool, string or date (YYYY-MM-DD);
	// empty: by the schema's declared type.
	Type string `yaml:"type"`
	// Skip leaves the column out of data.
	Skip bool `yaml:"skip"`
}

func loadImportMapping(path string) (importMapping, error) {
	var m importMapping
	if path == "" {
		return m, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil && !errors.Is(err, io.EOF) {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	for h, c := range m.Columns {
		switch c.Type {
		case "", "int", "float", "bool", "string", "date":
		default:
			return m, fmt.Errorf("%s: columns.%s.type: %q is not one of int, float, bool, string, date", path, h, c.Type)
		}
	}
	return m, nil
}

// importTable is a file's header and rows; Num is the spreadsheet row
// number (the header is row 1).
type importTable struct {
	Header []string
	Rows   []importRow
}

type importRow struct {
	Num    int
	Values []string
}

// readImportTable reads a CSV or an XLSX file (first sheet unless sheet is
// set), skipping blank rows.
func readImportTable(name string, r io.Reader, sheet string) (importTable, error) {
	var raw [][]string
	switch strings.ToLower(filepath.Ext(name)) {
	case ".xlsx", ".xlsm":
		f, err := excelize.OpenReader(r)
		if err != nil {
			return importTable{}, fmt.Errorf("%s: %w", name, err)
		}
		defer f.Close()
		if sheet == "" {
			sheet = f.GetSheetName(0)
		}
		if raw, err = f.GetRows(sheet); err != nil {
			return importTable{}, fmt.Errorf("%s: sheet %q: %w", name, sheet, err)
		}
	case ".csv", ".txt":
		cr := csv.NewReader(r)
		cr.FieldsPerRecord = -1
		var err error
		if raw, err = cr.ReadAll(); err != nil {
			return importTable{}, fmt.Errorf("%s: %w", name, err)
		}
	default:
		return importTable{}, fmt.Errorf("%w: %s: want a .csv or .xlsx file", config.ErrInvalid, name)
	}
	if len(raw) == 0 {
		return importTable{}, fmt.Errorf("%s: no header row", name)
	}
	t := importTable{Header: make([]string, len(raw[0]))}
	for i, h := range raw[0] {
		t.Header[i] = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
	}
	for i, vals := range raw[1:] {
		if strings.TrimSpace(strings.Join(vals, "")) == "" {
			continue
		}
		t.Rows = append(t.Rows, importRow{Num: i + 2, Values: vals})
	}
	return t, nil
}

// importer turns rows into checked envelopes of one type.
type importer struct {
	cat       *catalog.Catalog
	typ       string
	props     map[string]string // schema property -> declared JSON type
	mapping   importMapping
	keyColumn string
	source    string
	base      string // file name, part of every id
	now       time.Time
}

// importRowError is one invalid row.
type importRowError struct {
	Row    int
	Fields []envelope.FieldError
}

func newImporter(cat *catalog.Catalog, schemaFS fs.FS, typ string) (*importer, error) {
	t, ok := cat.Type(typ)
	if !ok {
		return nil, fmt.Errorf("%w: --type %q is not in the catalog (%s)", config.ErrInvalid, typ, strings.Join(cat.Names(), ", "))
	}
	im := &importer{cat: cat, typ: typ, props: map[string]string{}, source: "sluice-import", now: time.Now().UTC()}
	b, err := fs.ReadFile(schemaFS, t.Def.Schema)
	if err != nil {
		return nil, fmt.Errorf("schema of %s: %w", typ, err)
	}
	var doc struct {
		Properties map[string]struct {
			Type any `json:"type"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("schema of %s: %w", typ, err)
	}
	for name, p := range doc.Properties {
		switch v := p.Type.(type) {
		case string:
			im.props[name] = v
		case []any: // ["integer","null"]: the first non-null type
			for _, x := range v {
				if s, ok := x.(string); ok && s != "null" && im.props[name] == "" {
					im.props[name] = s
				}
			}
		}
	}
	return im, nil
}

// build makes one envelope per row; invalid rows are reported, not built.
func (im *importer) build(t importTable) ([]*envelope.Envelope, []importRowError) {
	keyIdx := -1
	for i, h := range t.Header {
		if im.keyColumn != "" && h == im.keyColumn {
			keyIdx = i
		}
	}
	var evs []*envelope.Envelope
	var bad []importRowError
	for _, r := range t.Rows {
		ev, fields := im.row(t.Header, r, keyIdx)
		if len(fields) == 0 {
			if err := im.cat.Prepare(ev); err != nil {
				var inv *envelope.Invalid
				if !errors.As(err, &inv) {
					fields = []envelope.FieldError{{Reason: err.Error()}}
				} else {
					fields = inv.Fields
				}
			}
		}
		if len(fields) > 0 {
			bad = append(bad, importRowError{Row: r.Num, Fields: fields})
			continue
		}
		evs = append(evs, ev)
	}
	return evs, bad
}

func (im *importer) row(header []string, r importRow, keyIdx int) (*envelope.Envelope, []envelope.FieldError) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d", im.base, im.typ, r.Num)
	for _, v := range r.Values {
		fmt.Fprintf(h, "\x00%s", v)
	}
	ev := &envelope.Envelope{ID: "imp:" + hex.EncodeToString(h.Sum(nil))[:32], Type: im.typ, Source: im.source, OccurredAt: im.now}
	data := map[string]any{}
	var fields []envelope.FieldError
	for i, col := range header {
		v := ""
		if i < len(r.Values) {
			v = strings.TrimSpace(r.Values[i])
		}
		if i == keyIdx {
			ev.Key = v
		}
		if col == "" {
			continue
		}
		if col == "occurred_at" {
			if v != "" {
				at, err := time.Parse(time.RFC3339, v)
				if err != nil {
					fields = append(fields, envelope.FieldError{Field: "occurred_at", Reason: fmt.Sprintf("%q is not RFC 3339", v)})
				}
				ev.OccurredAt = at
			}
			continue
		}
		m, listed := im.mapping.Columns[col]
		if m.Skip || (!listed && im.mapping.OnlyMapped) || v == "" {
			continue
		}
		field := col
		if m.Field != "" {
			field = m.Field
		}
		val, err := importConvert(v, m.Type, im.props[field])
		if err != nil {
			fields = append(fields, envelope.FieldError{Field: "data." + field, Reason: fmt.Sprintf("column %q: %v", col, err)})
			continue
		}
		data[field] = val
	}
	ev.Data, _ = json.Marshal(data)
	if keyIdx >= 0 && ev.Key == "" {
		fields = append(fields, envelope.FieldError{Field: "key", Reason: fmt.Sprintf("column %q is empty", im.keyColumn)})
	}
	return ev, fields
}

// importConvert converts a cell: by the mapping's type when set (a failure
// is an error), else by the schema's declared type where the cell plainly
// is one (a failure keeps the string, so the schema names the problem).
func importConvert(v, mapped, schemaType string) (any, error) {
	switch mapped {
	case "string":
		return v, nil
	case "int":
		n, ok := importInt(v)
		if !ok {
			return nil, fmt.Errorf("%q is not an int", v)
		}
		return n, nil
	case "float":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", v)
		}
		return f, nil
	case "bool":
		b, ok := importBool(v)
		if !ok {
			return nil, fmt.Errorf("%q is not a bool", v)
		}
		return b, nil
	case "date":
		return importDate(v)
	}
	switch schemaType {
	case "integer":
		if n, ok := importInt(v); ok {
			return n, nil
		}
	case "number":
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return json.Number(strconv.FormatFloat(f, 'f', -1, 64)), nil
		}
	case "boolean":
		if b, ok := importBool(v); ok {
			return b, nil
		}
	}
	return v, nil
}

// importInt accepts "42" and "42.0" (spreadsheets show integers as floats).
func importInt(v string) (json.Number, bool) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return json.Number(strconv.FormatInt(n, 10)), true
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && f == float64(int64(f)) {
		return json.Number(strconv.FormatInt(int64(f), 10)), true
	}
	return "", false
}

func importBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "true", "yes", "y", "1":
		return true, true
	case "false", "no", "n", "0":
		return false, true
	}
	return false, false
}

// importDate accepts YYYY-MM-DD, RFC 3339, "YYYY-MM-DD hh:mm:ss" and
// Excel serial day numbers, and gives YYYY-MM-DD.
func importDate(v string) (string, error) {
	for _, layout := range []string{time.DateOnly, time.RFC3339, time.DateTime} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.Format(time.DateOnly), nil
		}
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 && f < 2958466 {
		if t, err := excelize.ExcelDateToTime(f, false); err == nil {
			return t.Format(time.DateOnly), nil
		}
	}
	return "", fmt.Errorf("%q is not a date (YYYY-MM-DD)", v)
}

// importSend publishes events in file order, in batches (order per key is
// kept within and across batches), and counts new and duplicate events.
// With led, each batch is recorded there once stored.
func importSend(ctx context.Context, c *client.Client, led *importLedger, evs []*envelope.Envelope, batch int, progress func(int)) (stored, dups int, err error) {
	for start := 0; start < len(evs); start += batch {
		part := evs[start:min(start+batch, len(evs))]
		rs, err := c.PublishBatch(ctx, part)
		if err != nil {
			return stored, dups, fmt.Errorf("rows after %d stored; run the same import again to resume: %w", stored+dups, err)
		}
		if led != nil {
			if err := led.stored(ctx, part); err != nil {
				return stored, dups, fmt.Errorf("rows after %d stored; run the same import again to resume: %w", stored+dups, err)
			}
		}
		for _, r := range rs {
			if r.Duplicate {
				dups++
			} else {
				stored++
			}
		}
		progress(len(part))
	}
	return stored, dups, nil
}

// importOptions are the flags of `sluice import`.
type importOptions struct {
	cfgPath, typ, keyColumn, mapPath, sheet, via, url, token, source string
	dryRun, progress                                                 bool
	batch                                                            int
	timeout                                                          time.Duration
}

func importCmd() *cobra.Command {
	var o importOptions
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Send the rows of a CSV or XLSX file as events (one per row), or check them with --dry-run",
		Long: "Each row becomes one event of --type: columns map to data fields by header (or by a --map\n" +
			"file), cells are converted to the schema's declared types, the key comes from --key-column\n" +
			"or from the type's key expression, and a column named occurred_at sets the event time.\n" +
			"Every row is validated against the type's schema first; if any row is invalid, the report\n" +
			"(\"row 7: data.email: ...\", rows numbered as in the spreadsheet, header = row 1) is printed\n" +
			"and nothing is sent. Rows of one key are sent in file order.\n\n" +
			"Resumable: event ids are derived from the file name, row number and row content, and (--via\n" +
			"nats) every stored row is recorded in the imports KV bucket, so running the same file again\n" +
			"sends only the rows not stored yet, however much later (as long as topology.events_max_age).\n" +
			"With --via http only the events stream's duplicate window (topology.duplicate_window, 2m)\n" +
			"stops a repeat; later the rows are stored again with the same ids, and the CRM's\n" +
			"Idempotency-Key handling (the event id) is what prevents a second write.",
		Example: "  sluice import customers.csv --type customer_signed_up --dry-run\n" +
			"  sluice import agents.xlsx --type customer_signed_up --map columns.yaml --via http --url http://127.0.0.1:8080",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImport(cmd, args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it): catalog, nats, topology")
	f.StringVar(&o.typ, "type", "", "event type of every row (required)")
	f.StringVar(&o.keyColumn, "key-column", "", "column holding the key (default: the type's key expression)")
	f.StringVar(&o.mapPath, "map", "", "YAML mapping file: columns.<header>.{field,type,skip}, only_mapped")
	f.StringVar(&o.sheet, "sheet", "", "XLSX sheet (default: the first)")
	f.BoolVar(&o.dryRun, "dry-run", false, "validate every row and print the report; send nothing")
	f.StringVar(&o.via, "via", "nats", "transport: nats (JetStream, from the config's nats.url) or http (ingest at --url)")
	f.StringVar(&o.url, "url", "http://127.0.0.1:8080", "ingest base URL for --via http")
	f.StringVar(&o.token, "token", "", "bearer token for --via http (env SLUICE_IMPORT_TOKEN)")
	f.StringVar(&o.source, "source", "sluice-import", "source of the events (--via http: default none, ingest sets the token's name)")
	f.BoolVar(&o.progress, "progress", false, "show the progress bar even when stderr is not a terminal")
	f.IntVar(&o.batch, "batch", 200, "events per request")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up (resumable) after this long")
	_ = cmd.MarkFlagRequired("type")
	return cmd
}

func runImport(cmd *cobra.Command, path string, o importOptions) error {
	if o.via != "nats" && o.via != "http" {
		return fmt.Errorf("%w: --via %q: want nats or http", config.ErrInvalid, o.via)
	}
	if o.batch < 1 {
		return fmt.Errorf("%w: --batch must be >= 1", config.ErrInvalid)
	}
	c, err := LoadConfig(o.cfgPath, "all")
	if err != nil {
		return err
	}
	cat, err := loadCatalog(c.Catalog)
	if err != nil {
		return fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	im, err := newImporter(cat, c.Catalog.SchemaFS(schemas.Marketplace()), o.typ)
	if err != nil {
		return err
	}
	if im.mapping, err = loadImportMapping(o.mapPath); err != nil {
		return fmt.Errorf("%w: --map %w", config.ErrInvalid, err)
	}
	im.keyColumn, im.source, im.base = o.keyColumn, o.source, filepath.Base(path)
	if o.via == "http" && !cmd.Flags().Changed("source") {
		// Ingest binds the source to the token: none sent, the token's
		// name is stamped; "sluice-import" would be refused (403).
		im.source = ""
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tbl, err := readImportTable(path, f, o.sheet)
	if err != nil {
		return err
	}
	if o.keyColumn != "" && !slices.Contains(tbl.Header, o.keyColumn) {
		return fmt.Errorf("%w: --key-column %q is not a column of %s", config.ErrInvalid, o.keyColumn, path)
	}
	out := cmd.OutOrStdout()
	evs, bad := im.build(tbl)
	for _, b := range bad {
		for _, fe := range b.Fields {
			fmt.Fprintf(out, "row %d: %s: %s\n", b.Row, fe.Field, fe.Reason)
		}
	}
	if len(bad) > 0 {
		fmt.Fprintf(out, "%d of %d rows invalid; nothing sent\n", len(bad), len(tbl.Rows))
		return fmt.Errorf("%w: %d of %d rows of %s", errImportRows, len(bad), len(tbl.Rows), path)
	}
	if o.dryRun {
		fmt.Fprintf(out, "all %d rows valid (dry run: nothing sent)\n", len(evs))
		return nil
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	var tr client.Transport
	var led *importLedger
	skipped := 0
	if o.via == "http" {
		if o.token == "" {
			o.token = os.Getenv(EnvPrefix + "IMPORT_TOKEN")
		}
		tr = client.NewHTTP(o.url, o.token, &http.Client{Timeout: 30 * time.Second})
	} else {
		nc, _, err := connectCLI(c, "import")
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*o.batch))
		if err != nil {
			return err
		}
		names := topology.New(c.Topology)
		tr = client.NewJetStream(js, names)
		if led, err = openImportLedger(ctx, js, names, im.base); err != nil {
			return err
		}
		if evs, skipped, err = led.unsent(ctx, evs); err != nil {
			return err
		}
	}
	cl, err := client.New(client.Config{Source: im.source}, tr)
	if err != nil {
		return err
	}
	progress := func(int) {}
	if o.progress || isTerminal(os.Stderr) {
		bar := progressbar.NewOptions(len(evs), progressbar.OptionSetWriter(cmd.ErrOrStderr()),
			progressbar.OptionSetDescription("importing "+im.base), progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionOnCompletion(func() { fmt.Fprintln(cmd.ErrOrStderr()) }))
		progress = func(n int) { _ = bar.Add(n) }
	}
	stored, dups, err := importSend(ctx, cl, led, evs, o.batch, progress)
	fmt.Fprintf(out, "imported %d rows from %s: %d stored, %d already stored (duplicates)", stored+dups+skipped, path, stored, dups+skipped)
	if skipped > 0 {
		fmt.Fprintf(out, ", %d of them not sent (imported before)", skipped)
	}
	fmt.Fprintln(out)
	return err
}

// sampleSpreadsheet is the sample `make run`'s demo imports at start.
//
//go:embed testdata/import/customers.xlsx
var sampleSpreadsheet []byte

const sampleSpreadsheetName = "customers.xlsx"

// importSample sends the embedded sample spreadsheet (customer_signed_up
// rows of the sample marketplace) through tr and returns the rows sent.
func importSample(ctx context.Context, tr client.Transport) (int, error) {
	cat, err := loadCatalog(catalog.Config{})
	if err != nil {
		return 0, err
	}
	im, err := newImporter(cat, schemas.Marketplace(), "customer_signed_up")
	if err != nil {
		return 0, err
	}
	im.source, im.base = demoImportSource, sampleSpreadsheetName
	tbl, err := readImportTable(sampleSpreadsheetName, bytes.NewReader(sampleSpreadsheet), "")
	if err != nil {
		return 0, err
	}
	evs, bad := im.build(tbl)
	if len(bad) > 0 {
		return 0, fmt.Errorf("%w: %d rows of the sample", errImportRows, len(bad))
	}
	cl, err := client.New(client.Config{Source: im.source}, tr)
	if err != nil {
		return 0, err
	}
	stored, dups, err := importSend(ctx, cl, nil, evs, 200, func(int) {})
	return stored + dups, err
}
