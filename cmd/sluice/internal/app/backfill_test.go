package app

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/config"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

const bfCustomers = 1000

// bfProductDB creates a SQLite product database with n orders spread over
// bfCustomers customers: order i belongs to customer i%bfCustomers and is
// that customer's version i/bfCustomers+1. One transaction, one prepared
// insert (50,000 rows in well under a second).
func bfProductDB(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "product.db")
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL,
		version INTEGER NOT NULL, amount REAL, note TEXT, updated_at TEXT NOT NULL)`)
	require.NoError(t, err)
	tx, err := db.Begin()
	require.NoError(t, err)
	st, err := tx.Prepare(`INSERT INTO orders (id, customer_id, version, amount, note, updated_at) VALUES (?, ?, ?, ?, ?, ?)`)
	require.NoError(t, err)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= n; i++ {
		var note any
		if i%7 != 0 {
			note = "order " + strconv.Itoa(i)
		}
		// updated_at repeats every 3 rows: a composite cursor needs the id too.
		_, err := st.Exec(i, fmt.Sprintf("cust %d", i%bfCustomers), i/bfCustomers+1, float64(i)/4, note,
			base.Add(time.Duration(i/3)*time.Second).Format(time.RFC3339))
		require.NoError(t, err)
	}
	require.NoError(t, st.Close())
	require.NoError(t, tx.Commit())
	return path
}

const bfConfig = `
backfill:
  queries:
    - name: orders
      type: order_synced
      sql: "SELECT o.id, o.customer_id, o.version, o.amount, o.note, o.updated_at FROM orders o WHERE :cursor"
      key_column: customer_id
      cursor: [o.id]
      version_column: version
      batch_size: 500
    - name: orders_by_time
      type: order_synced
      sql: "SELECT id, customer_id, version, updated_at FROM orders WHERE id % 2 = 0 AND :cursor"
      key_column: customer_id
      cursor: [updated_at, id]
      version_column: version
      batch_size: 7
`

// bfEnv starts a server with a fresh topology, a product DB of n rows and
// a config file with the backfill queries; the CLI's env points at them.
func bfEnv(t *testing.T, n int) (jetstream.JetStream, topology.Names, string) {
	t.Helper()
	js, names := cliServer(t, 2)
	t.Setenv("SLUICE_ENRICHER_DB_DSN", bfProductDB(t, n))
	cfg := filepath.Join(t.TempDir(), "sluice.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(bfConfig), 0o600))
	return js, names, cfg
}

// bfEvents reads the whole events stream in stream order.
func bfEvents(t *testing.T, js jetstream.JetStream, names topology.Names) []envelope.Envelope {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, names.EventsStream())
	require.NoError(t, err)
	n := int(st.CachedInfo().State.Msgs)
	if n == 0 {
		return nil
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	it, err := c.Messages()
	require.NoError(t, err)
	defer it.Stop()
	out := make([]envelope.Envelope, 0, n)
	for len(out) < n {
		m, err := it.Next()
		require.NoError(t, err)
		var e envelope.Envelope
		require.NoError(t, json.Unmarshal(m.Data(), &e))
		require.Equal(t, e.ID, m.Headers().Get("Nats-Msg-Id"))
		out = append(out, e)
	}
	return out
}

func TestBackfillResumesAfterKillAndSendsEachRowOnce(t *testing.T) {
	const rows = 50_000
	js, names, cfgPath := bfEnv(t, rows)
	c, err := LoadConfig(cfgPath, "all")
	require.NoError(t, err)
	q, err := backfillQuery(c.Backfill, "orders", "")
	require.NoError(t, err)
	q.Rate = 0

	// First run: killed after page 40 was acked but before its cursor was saved.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := backfillOptions{afterPublish: func(page int) {
		if page == 40 {
			cancel()
		}
	}}
	err = runBackfill(ctx, c, q, o, io.Discard, io.Discard)
	require.ErrorIs(t, err, context.Canceled)
	require.Len(t, bfEvents(t, js, names), 40*500, "page 40 was stored, its cursor not saved")

	kv, err := js.KeyValue(context.Background(), BackfillBucket(names))
	require.NoError(t, err)
	e, err := kv.Get(context.Background(), "orders")
	require.NoError(t, err)
	var saved backfillState
	require.NoError(t, json.Unmarshal(e.Value(), &saved))
	require.Equal(t, int64(39*500), saved.Sent)
	require.Equal(t, []json.RawMessage{json.RawMessage("19500")}, saved.Cursor)

	// Re-run through the CLI: resumes at page 40 (re-sent, deduplicated).
	var stderr strings.Builder
	root := newRoot(io.Discard, &stderr)
	root.SetArgs([]string{"backfill", "--config", cfgPath, "--query", "orders", "--rate", "0"})
	require.NoError(t, root.Execute())
	require.Contains(t, stderr.String(), "resuming after cursor [19500] (19500 rows sent before)")
	require.Contains(t, stderr.String(), "100% 50000/50000 rows")

	evs := bfEvents(t, js, names)
	require.Len(t, evs, rows, "every row exactly once in the stream")
	ids := map[string]bool{}
	lastVersion := map[string]int{}
	for _, e := range evs {
		require.False(t, ids[e.ID], "duplicate id %s", e.ID)
		ids[e.ID] = true
		require.Equal(t, "order_synced", e.Type)
		var d struct {
			ID         int     `json:"id"`
			CustomerID string  `json:"customer_id"`
			Version    int     `json:"version"`
			Amount     float64 `json:"amount"`
			Note       *string `json:"note"`
		}
		require.NoError(t, json.Unmarshal(e.Data, &d))
		require.Equal(t, d.CustomerID, e.Key)
		require.Equal(t, BackfillID("order_synced", e.Key, strconv.Itoa(d.Version)), e.ID)
		require.Equal(t, float64(d.ID)/4, d.Amount)
		require.Equal(t, d.ID%7 == 0, d.Note == nil, "NULL stays null")
		require.Greater(t, d.Version, lastVersion[e.Key], "order per key: %s", e.Key)
		lastVersion[e.Key] = d.Version
	}
	require.Len(t, lastVersion, bfCustomers)

	// A third run finds nothing after the cursor and sends nothing.
	out, err := runCLI(t, "backfill", "--config", cfgPath, "--query", "orders", "--rate", "0")
	require.NoError(t, err)
	require.Equal(t, "backfill orders: 50000 events of type order_synced sent\n", out)
	st, err := js.Stream(context.Background(), names.EventsStream())
	require.NoError(t, err)
	require.Equal(t, uint64(rows), st.CachedInfo().State.Msgs)

	// --reset starts over; every id is a duplicate within the window.
	_, err = runCLI(t, "backfill", "--config", cfgPath, "--query", "orders", "--rate", "0", "--reset")
	require.NoError(t, err)
	st, err = js.Stream(context.Background(), names.EventsStream())
	require.NoError(t, err)
	require.Equal(t, uint64(rows), st.CachedInfo().State.Msgs)
}

func TestBackfillCompositeCursorAndTypeFlag(t *testing.T) {
	js, names, cfgPath := bfEnv(t, 1000)
	_, err := runCLI(t, "backfill", "--config", cfgPath, "--query", "orders_by_time", "--type", "order_v2", "--rate", "0")
	require.NoError(t, err)
	evs := bfEvents(t, js, names)
	require.Len(t, evs, 500, "every even row once across pages of 7 with repeated updated_at")
	seen := map[string]bool{}
	for _, e := range evs {
		require.Equal(t, "order_v2", e.Type)
		require.False(t, seen[e.ID])
		seen[e.ID] = true
	}
	// The cursor was saved for type order_v2: another type must reset.
	_, err = runCLI(t, "backfill", "--config", cfgPath, "--query", "orders_by_time", "--rate", "0")
	require.ErrorIs(t, err, config.ErrInvalid)
	require.ErrorContains(t, err, "--reset")
}

func TestBackfillDryRunSendsNothing(t *testing.T) {
	js, names, cfgPath := bfEnv(t, 1200)
	out, err := runCLI(t, "backfill", "--config", cfgPath, "--query", "orders", "--dry-run", "--rate", "0")
	require.NoError(t, err)
	require.Equal(t, "dry run: 1200 events of type order_synced built from query orders, nothing sent\n", out)
	require.Empty(t, bfEvents(t, js, names))
	_, err = js.KeyValue(context.Background(), BackfillBucket(names))
	require.ErrorIs(t, err, jetstream.ErrBucketNotFound, "a dry run saves no cursor")
}

func TestBackfillRateLimits(t *testing.T) {
	js, names, cfgPath := bfEnv(t, 1500)
	start := time.Now()
	_, err := runCLI(t, "backfill", "--config", cfgPath, "--query", "orders", "--rate", "2000")
	require.NoError(t, err)
	// Burst = one page (500): the other 1000 rows need at least 0.5s at 2000/s.
	require.GreaterOrEqual(t, time.Since(start), 450*time.Millisecond)
	require.Len(t, bfEvents(t, js, names), 1500)
}

func TestBackfillCLIErrors(t *testing.T) {
	_, _, cfgPath := bfEnv(t, 10)
	for name, args := range map[string][]string{
		"unknown query": {"--query", "nope"},
		"bad type":      {"--query", "orders", "--type", "a b"},
		"negative rate": {"--query", "orders", "--rate", "-1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := runCLI(t, append([]string{"backfill", "--config", cfgPath}, args...)...)
			require.ErrorIs(t, err, config.ErrInvalid)
		})
	}
	bad := strings.Replace(bfConfig, "key_column: customer_id", "key_column: nope", 1)
	p := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(p, []byte(bad), 0o600))
	_, err := runCLI(t, "backfill", "--config", p, "--query", "orders", "--dry-run")
	require.ErrorIs(t, err, config.ErrInvalid)
	require.ErrorContains(t, err, `backfill.queries[orders].key_column: "nope" is not a result column`)
}

func TestBackfillConfigValidate(t *testing.T) {
	good := BackfillQuery{Name: "q", SQL: "SELECT * FROM t WHERE :cursor", KeyColumn: "k", Cursor: []string{"id"}, VersionColumn: "v"}
	for _, c := range []struct {
		name string
		edit func(*BackfillQuery)
		want string
	}{
		{"ok", func(*BackfillQuery) {}, ""},
		{"name", func(q *BackfillQuery) { q.Name = "a b" }, "backfill.queries[0].name"},
		{"no placeholder", func(q *BackfillQuery) { q.SQL = "SELECT 1" }, "backfill.queries[0].sql: must hold exactly one :cursor placeholder (has 0)"},
		{"two placeholders", func(q *BackfillQuery) { q.SQL += " AND :cursor" }, "(has 2)"},
		{"type", func(q *BackfillQuery) { q.Type = "a.b" }, "backfill.queries[0].type"},
		{"key", func(q *BackfillQuery) { q.KeyColumn = "" }, "backfill.queries[0].key_column: required"},
		{"version", func(q *BackfillQuery) { q.VersionColumn = "" }, "backfill.queries[0].version_column: required"},
		{"cursor", func(q *BackfillQuery) { q.Cursor = nil }, "backfill.queries[0].cursor: required"},
		{"cursor injection", func(q *BackfillQuery) { q.Cursor = []string{"id; DROP TABLE t"} }, "backfill.queries[0].cursor[0]"},
		{"batch", func(q *BackfillQuery) { q.BatchSize = -1 }, "backfill.queries[0].batch_size"},
		{"rate", func(q *BackfillQuery) { q.Rate = -1 }, "backfill.queries[0].rate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := good
			c.edit(&q)
			err := BackfillConfig{Queries: []BackfillQuery{q}}.WithDefaults().Validate()
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.want)
		})
	}
	d := BackfillConfig{Queries: []BackfillQuery{good}}.WithDefaults()
	require.Equal(t, 500, d.Queries[0].BatchSize)
	require.Equal(t, 500.0, d.Queries[0].Rate)
	require.ErrorContains(t, BackfillConfig{Queries: []BackfillQuery{good, good}}.WithDefaults().Validate(), `"q" is used twice`)
}

func TestBackfillID(t *testing.T) {
	for _, c := range []struct{ typ, key, ver, want string }{
		{"customer_upserted", "42", "7", "customer_upserted:42:7"},
		{"customer_upserted", "cust 1", "2026-01-01 10:00:00", "customer_upserted:cust%201:2026-01-01%2010:00:00"},
		{"t", "a%b", "é", "t:a%25b:%C3%A9"},
		{"t", strings.Repeat("k", 200), "1", "t:sha256:"},
	} {
		got := BackfillID(c.typ, c.key, c.ver)
		require.True(t, strings.HasPrefix(got, c.want), got)
		require.True(t, envelope.ValidID(got), got)
	}
	require.Equal(t, "t:customer%3A7:2026-01-01T10:00:00Z", BackfillID("t", "customer:7", "2026-01-01T10:00:00Z"))
	require.NotEqual(t, BackfillID("t", "a:b", "c"), BackfillID("t", "a", "b:c"), "a colon in the key is escaped")
}

func FuzzBackfillID(f *testing.F) {
	f.Add("customer", "42", "7")
	f.Add("t", "a b\x00", "2026-01-01T00:00:00Z")
	f.Add("t", strings.Repeat("é", 80), "")
	f.Fuzz(func(t *testing.T, typ, key, ver string) {
		if !envelope.ValidType(typ) {
			return
		}
		id := BackfillID(typ, key, ver)
		if !envelope.ValidID(id) {
			t.Fatalf("BackfillID(%q, %q, %q) = %q is not a valid id", typ, key, ver, id)
		}
		if id != BackfillID(typ, key, ver) {
			t.Fatal("not deterministic")
		}
	})
}
