package enricher_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/productdb"
)

// countingSQLite is the sqlite driver behind a connection that counts the
// lookup statements prepared with FROM "customers" in them. Its connections
// offer only Prepare (no QueryerContext), as go-sql-driver/mysql does for
// queries with arguments: a db.QueryContext then prepares, runs and closes
// a statement every time.
const countingSQLite = "sqlite-counting-prepares"

var (
	registerCounting sync.Once
	customerPrepares atomic.Int64
)

type countingDriver struct{ driver.Driver }

func (d countingDriver) Open(name string) (driver.Conn, error) {
	c, err := d.Driver.Open(name)
	if err != nil {
		return nil, err
	}
	return countingConn{c}, nil
}

type countingConn struct{ driver.Conn }

func (c countingConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if strings.Contains(query, `FROM "customers"`) && !strings.Contains(query, "1=0") { // not Start's table check
		customerPrepares.Add(1)
	}
	if pc, ok := c.Conn.(driver.ConnPrepareContext); ok {
		return pc.PrepareContext(ctx, query)
	}
	return c.Conn.Prepare(query)
}

// openCountingSQLite is openSQLite through countingSQLite.
func openCountingSQLite(t *testing.T) (*sql.DB, productdb.Config) {
	t.Helper()
	seeded, dbc := openSQLite(t, "")
	registerCounting.Do(func() { sql.Register(countingSQLite, countingDriver{seeded.Driver()}) })
	db, err := sql.Open(countingSQLite, filepath.Clean(dbc.DSN)+"?"+productdb.SQLitePragmas)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db, dbc
}

// A lookup's SQL is prepared once per connection, not once per query: the
// enricher keeps a prepared statement per lookup (issue 14: re-preparing
// was the biggest cost of a cache miss). Stop closes the statements and a
// new Start prepares them again.
func TestLookupIsPreparedOncePerConnection(t *testing.T) {
	db, dbc := openCountingSQLite(t)
	db.SetMaxOpenConns(2)
	cfg := fastConfig(dbc)
	cfg.Cache.Size = -1 // every event queries the database
	h := newHarness(t, 1, cfg, db, loadCatalog(t, nil))
	h.start()
	customerPrepares.Store(0)

	const n = 30
	for i := 1; i <= n; i++ {
		c := i%3 + 1
		h.publish("order_placed", "customer:"+strconv.Itoa(c), order(i, c, 1, nil, i))
	}
	got := h.waitDispatched(n, 20*time.Second)
	for i, d := range got {
		require.Equal(t, "ev-"+strconv.Itoa(i+1), d.Req.EventID, "order kept")
	}
	require.Equal(t, uint64(n), h.svc.Stats().Cache.Misses)
	require.LessOrEqual(t, customerPrepares.Load(), int64(2), "one prepare per pooled connection, not one per lookup")
	require.Positive(t, customerPrepares.Load())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.svc.Stop(ctx))
	customerPrepares.Store(0)
	require.NoError(t, h.svc.Start(context.Background())) // stopped by h.start's cleanup
	h.publish("order_placed", "customer:1", order(n+1, 1, 1, nil, n+1))
	h.waitDispatched(n+1, 20*time.Second)
	require.Equal(t, int64(1), customerPrepares.Load(), "prepared again after a restart")
}

// What a cache miss's query costs on SQLite, prepared per query (as
// before issue 14) and prepared once.
func BenchmarkLookupQuery(b *testing.B) {
	db, _ := openSQLite(b, "")
	q := `SELECT "customers"."name" AS "name", "customers"."email" AS "email" FROM "customers" WHERE "customers"."id" = ?`
	run := func(b *testing.B, query func(key int64) (*sql.Rows, error)) {
		b.ReportAllocs()
		var key int64
		for b.Loop() {
			key = key%3 + 1
			rows, err := query(key)
			require.NoError(b, err)
			require.True(b, rows.Next())
			require.NoError(b, rows.Close())
		}
	}
	b.Run("per-query", func(b *testing.B) {
		run(b, func(key int64) (*sql.Rows, error) { return db.QueryContext(context.Background(), q, key) })
	})
	b.Run("prepared", func(b *testing.B) {
		st, err := db.Prepare(q)
		require.NoError(b, err)
		defer st.Close()
		run(b, func(key int64) (*sql.Rows, error) { return st.QueryContext(context.Background(), key) })
	})
}
