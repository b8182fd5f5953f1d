package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"

	"sluice.dev/ingest/client"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
)

func backfillCmd() *cobra.Command {
	var cfgPath, typ, query string
	var rateFlag float64
	var dryRun, reset bool
	cmd := &cobra.Command{
		Use:   "backfill --query NAME [--type T]",
		Short: "Stream the rows of a configured product-database query as events, in cursor order, resumable",
		Example: "  sluice backfill --config sluice.yaml --query customers --type customer_upserted\n" +
			"  sluice backfill --query customers --dry-run      # read and build every event, send nothing\n" +
			"  sluice backfill --query customers --reset        # forget the saved cursor, start over",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := LoadConfig(cfgPath, "all")
			if err != nil {
				return err
			}
			q, err := backfillQuery(c.Backfill, query, typ)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("rate") {
				if rateFlag < 0 {
					return fmt.Errorf("%w: --rate must be >= 0 (0: unlimited)", config.ErrInvalid)
				}
				q.Rate = rateFlag
			}
			ctx, stop := signalContext()
			defer stop()
			return runBackfill(ctx, c, q, backfillOptions{DryRun: dryRun, Reset: reset}, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().StringVar(&typ, "type", "", "event type to send (overrides the query's type)")
	cmd.Flags().StringVar(&query, "query", "", "name of the query under backfill.queries")
	cmd.Flags().Float64Var(&rateFlag, "rate", 500, "events per second at most, 0 unlimited (default: the query's rate)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "read the rows and build the events, send nothing, save no cursor")
	cmd.Flags().BoolVar(&reset, "reset", false, "delete the saved cursor first and start from the first row")
	return cmd
}

// backfillQuery picks the named query and settles its type.
func backfillQuery(c BackfillConfig, name, typ string) (BackfillQuery, error) {
	for _, q := range c.Queries {
		if q.Name != name {
			continue
		}
		if typ != "" {
			q.Type = typ
		}
		if !envelope.ValidType(q.Type) {
			return q, fmt.Errorf("%w: --type %q (or backfill.queries[%s].type) must be 1-64 of A-Z a-z 0-9 _ -", config.ErrInvalid, q.Type, name)
		}
		return q, nil
	}
	var names []string
	for _, q := range c.Queries {
		names = append(names, q.Name)
	}
	return BackfillQuery{}, fmt.Errorf("%w: --query %q is not under backfill.queries (have: %s)", config.ErrInvalid, name, strings.Join(names, ", "))
}

type backfillOptions struct {
	DryRun bool
	Reset  bool
	// afterPublish runs after a page is acked, before its cursor is saved
	// (tests cancel the context here to simulate a kill).
	afterPublish func(page int)
}

// backfillState is the cursor saved in the KV bucket after every page.
type backfillState struct {
	Type      string            `json:"type"`
	Cursor    []json.RawMessage `json:"cursor"`
	Sent      int64             `json:"sent"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// BackfillBucket is the KV bucket holding backfill cursors (key = query name).
func BackfillBucket(names topology.Names) string {
	return strings.ToLower(names.Config().StreamPrefix) + "_backfill"
}

// batchPublisher is what backfill needs of the producer client.
type batchPublisher interface {
	PublishBatch(ctx context.Context, events []*envelope.Envelope) ([]client.Result, error)
}

func runBackfill(ctx context.Context, c Config, q BackfillQuery, o backfillOptions, stdout, stderr io.Writer) error {
	db, err := productdb.Open(ctx, c.Enricher.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	d, _ := productdb.DialectFor(c.Enricher.DB.WithDefaults().Driver)
	b := &backfiller{db: db, dialect: d, q: q, o: o, progress: stderr}
	if q.Rate > 0 {
		b.lim = rate.NewLimiter(rate.Limit(q.Rate), q.BatchSize)
	}
	if o.DryRun {
		if err := b.run(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "dry run: %d events of type %s built from query %s, nothing sent\n", b.sent, q.Type, q.Name)
		return nil
	}
	names := topology.New(c.Topology)
	nc, _, err := connectCLI(c, "backfill")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return err
	}
	if _, err := js.Stream(ctx, names.EventsStream()); err != nil {
		return fmt.Errorf("events stream %s (is `sluice run` up?): %w", names.EventsStream(), err)
	}
	b.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BackfillBucket(names),
		Description: "sluice backfill cursors, key = query name", Replicas: names.Config().Replicas})
	if err != nil {
		return fmt.Errorf("backfill cursor bucket: %w", err)
	}
	b.pub, err = client.New(client.Config{Source: "sluice-backfill", MaxAttempts: 20}, client.NewJetStream(js, names))
	if err != nil {
		return err
	}
	if o.Reset {
		if err := b.kv.Delete(ctx, q.Name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("reset cursor: %w", err)
		}
	}
	if err := b.run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backfill %s: %d events of type %s sent\n", q.Name, b.sent, q.Type)
	return nil
}

type backfiller struct {
	db       *sql.DB
	dialect  productdb.Dialect
	q        BackfillQuery
	o        backfillOptions
	lim      *rate.Limiter
	kv       jetstream.KeyValue // nil in a dry run
	pub      batchPublisher     // nil in a dry run
	progress io.Writer

	cursor []any // nil: before the first row
	sent   int64 // rows sent (or built) in total, resumed runs included
}

// run reads pages from the saved cursor on, publishes each and saves the
// cursor once all of a page's events are acked.
func (b *backfiller) run(ctx context.Context) error {
	if b.kv != nil {
		if err := b.load(ctx); err != nil {
			return err
		}
	}
	total, err := b.count(ctx)
	if err != nil {
		return err
	}
	start, last := time.Now(), time.Time{}
	startSent := b.sent
	for page := 1; ; page++ {
		events, next, err := b.page(ctx)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			break
		}
		if b.lim != nil {
			if err := b.lim.WaitN(ctx, len(events)); err != nil {
				return err
			}
		}
		if b.pub != nil {
			if _, err := b.pub.PublishBatch(ctx, events); err != nil {
				return fmt.Errorf("backfill %s: page %d: %w (re-run to resume from the saved cursor)", b.q.Name, page, err)
			}
		} else {
			for _, ev := range events {
				if err := ev.Check(); err != nil {
					return fmt.Errorf("backfill %s: row with cursor %v: %w", b.q.Name, next, err)
				}
			}
		}
		if b.o.afterPublish != nil {
			b.o.afterPublish(page)
		}
		b.cursor = next
		b.sent += int64(len(events))
		if b.kv != nil {
			if err := b.save(ctx); err != nil {
				return err
			}
		}
		if len(events) < b.q.BatchSize {
			break
		}
		if time.Since(last) >= time.Second {
			last = time.Now()
			b.printProgress(total, startSent, start)
		}
	}
	b.printProgress(total, startSent, start)
	return nil
}

func (b *backfiller) printProgress(total, startSent int64, start time.Time) {
	done := b.sent
	perSec := float64(done-startSent) / max(time.Since(start).Seconds(), 1e-3)
	if total > 0 {
		pct := min(float64(done)/float64(total), 1)
		bar := strings.Repeat("#", int(pct*30)) + strings.Repeat(".", 30-int(pct*30))
		fmt.Fprintf(b.progress, "backfill %s [%s] %3.0f%% %d/%d rows %.0f/s\n", b.q.Name, bar, pct*100, done, total, perSec)
		return
	}
	fmt.Fprintf(b.progress, "backfill %s: %d rows %.0f/s\n", b.q.Name, done, perSec)
}

func (b *backfiller) load(ctx context.Context) error {
	e, err := b.kv.Get(ctx, b.q.Name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read backfill cursor %s: %w", b.q.Name, err)
	}
	var st backfillState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return fmt.Errorf("backfill cursor %s: %w (use --reset)", b.q.Name, err)
	}
	if st.Type != b.q.Type {
		return fmt.Errorf("%w: the saved cursor of %s was for type %q, not %q: use --reset to start over", config.ErrInvalid, b.q.Name, st.Type, b.q.Type)
	}
	if len(st.Cursor) != len(b.q.Cursor) {
		return fmt.Errorf("%w: the saved cursor of %s has %d columns, the query %d: use --reset", config.ErrInvalid, b.q.Name, len(st.Cursor), len(b.q.Cursor))
	}
	cur := make([]any, len(st.Cursor))
	for i, raw := range st.Cursor {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("backfill cursor %s: %w (use --reset)", b.q.Name, err)
		}
		if cur[i], err = productdb.KeyParam(v); err != nil {
			return fmt.Errorf("backfill cursor %s: %w (use --reset)", b.q.Name, err)
		}
	}
	b.cursor, b.sent = cur, st.Sent
	fmt.Fprintf(b.progress, "backfill %s: resuming after cursor %v (%d rows sent before)\n", b.q.Name, cur, st.Sent)
	return nil
}

func (b *backfiller) save(ctx context.Context) error {
	st := backfillState{Type: b.q.Type, Sent: b.sent, UpdatedAt: time.Now().UTC()}
	for _, v := range b.cursor {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		st.Cursor = append(st.Cursor, raw)
	}
	val, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := b.kv.Put(ctx, b.q.Name, val); err != nil {
		return fmt.Errorf("save backfill cursor %s: %w (re-run resumes from the previous page; its events are deduplicated)", b.q.Name, err)
	}
	return nil
}

// count returns how many rows are left after the cursor (0 when unknown).
func (b *backfiller) count(ctx context.Context) (int64, error) {
	where, args := b.condition()
	var n int64
	err := b.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM ("+strings.Replace(b.q.SQL, ":cursor", where, 1)+") bf", args...).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("backfill %s: count rows: %w", b.q.Name, err)
	}
	return n + b.sent, nil
}

// condition is the keyset predicate after b.cursor and its parameters.
func (b *backfiller) condition() (string, []any) {
	if b.cursor == nil {
		return "1=1", nil
	}
	var ors []string
	var args []any
	n := 0
	for i := range b.q.Cursor {
		var ands []string
		for j := 0; j < i; j++ {
			n++
			ands = append(ands, b.q.Cursor[j]+" = "+b.dialect.Placeholder(n))
			args = append(args, b.cursor[j])
		}
		n++
		ands = append(ands, b.q.Cursor[i]+" > "+b.dialect.Placeholder(n))
		args = append(args, b.cursor[i])
		ors = append(ors, "("+strings.Join(ands, " AND ")+")")
	}
	return "(" + strings.Join(ors, " OR ") + ")", args
}

// pageSQL is the query of the next page.
func (b *backfiller) pageSQL() (string, []any) {
	where, args := b.condition()
	return strings.Replace(b.q.SQL, ":cursor", where, 1) +
		" ORDER BY " + strings.Join(b.q.Cursor, ", ") + " LIMIT " + strconv.Itoa(b.q.BatchSize), args
}

// page reads the next page and builds its events; next is the cursor of
// its last row.
func (b *backfiller) page(ctx context.Context) (events []*envelope.Envelope, next []any, err error) {
	query, args := b.pageSQL()
	rows, err := b.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("backfill %s: query: %w", b.q.Name, err)
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, nil, err
	}
	idx := map[string]int{}
	for i, t := range types {
		idx[t.Name()] = i
	}
	col := func(key, name string) (int, error) {
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			name = name[i+1:]
		}
		i, ok := idx[name]
		if !ok {
			return 0, fmt.Errorf("%w: backfill.queries[%s].%s: %q is not a result column of the query", config.ErrInvalid, b.q.Name, key, name)
		}
		return i, nil
	}
	keyCol, err := col("key_column", b.q.KeyColumn)
	if err != nil {
		return nil, nil, err
	}
	verCol, err := col("version_column", b.q.VersionColumn)
	if err != nil {
		return nil, nil, err
	}
	curCols := make([]int, len(b.q.Cursor))
	for i, c := range b.q.Cursor {
		if curCols[i], err = col("cursor", c); err != nil {
			return nil, nil, err
		}
	}
	now := time.Now().UTC()
	for rows.Next() {
		vals := make([]any, len(types))
		ptrs := make([]any, len(types))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, nil, fmt.Errorf("backfill %s: scan: %w", b.q.Name, err)
		}
		data := make(map[string]any, len(types))
		for i, t := range types {
			vals[i] = productdb.JSONValue(vals[i], t.DatabaseTypeName())
			data[t.Name()] = vals[i]
		}
		next = make([]any, len(curCols))
		for i, ci := range curCols {
			if next[i], err = productdb.KeyParam(vals[ci]); err != nil || next[i] == nil {
				return nil, nil, fmt.Errorf("backfill %s: cursor column %s: %v is not a usable cursor value (NULL, boolean or object)", b.q.Name, b.q.Cursor[i], vals[ci])
			}
		}
		key, kerr := idPart(vals[keyCol])
		ver, verr := idPart(vals[verCol])
		if kerr != nil || verr != nil {
			return nil, nil, fmt.Errorf("backfill %s: row with cursor %v: key or version is NULL or not a scalar", b.q.Name, next)
		}
		raw, err := json.Marshal(data)
		if err != nil {
			return nil, nil, fmt.Errorf("backfill %s: row with cursor %v: %w", b.q.Name, next, err)
		}
		events = append(events, &envelope.Envelope{ID: BackfillID(b.q.Type, key, ver), Type: b.q.Type, Key: key,
			Source: "sluice-backfill", OccurredAt: now, Data: raw})
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("backfill %s: read rows: %w", b.q.Name, err)
	}
	return events, next, nil
}

// idPart renders a key or version value (after productdb.JSONValue) as text.
func idPart(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int:
		return strconv.Itoa(x), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case json.Number:
		return x.String(), nil
	case *big.Int:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", errors.New("not a scalar")
}

// BackfillID is the event id of one row version: `<type>:<key>:<version>`,
// every byte outside printable ASCII, '%' and a ':' in the key written as
// %XX; when that is
// longer than 128 characters, `<type>:sha256:<hex of sha256(key "\n"
// version)>`. A live producer that uses the same rule for the same row
// version sends the same id, so JetStream (within the duplicate window) and
// the CRM (Idempotency-Key) see one event, not two.
func BackfillID(typ, key, version string) string {
	id := typ + ":" + idEscape(key, true) + ":" + idEscape(version, false)
	if len(id) <= 128 {
		return id
	}
	sum := sha256.Sum256([]byte(key + "\n" + version))
	return typ + ":sha256:" + hex.EncodeToString(sum[:])
}

// idEscape writes bytes outside printable ASCII, '%' and (in a key) ':'
// as %XX, so that the id splits back unambiguously at its first two colons.
func idEscape(s string, colon bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c > ' ' && c <= '~' && c != '%' && (c != ':' || !colon) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
