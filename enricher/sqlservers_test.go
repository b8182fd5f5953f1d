package enricher_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"sluice.dev/enricher"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
)

// server is a real database server the lookups are tested against.
type server struct {
	driver, env, name string
	customersDDL      string
	since             string // the seed's signed_up_at literal
	viaProxy          func(t testing.TB, dsn, addr string) string
}

var (
	postgresServer = server{driver: "postgres", env: "SLUICE_TEST_POSTGRES_DSN", name: "PostgreSQL",
		customersDDL: `id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, tier TEXT,
			signed_up_at TIMESTAMPTZ, balance NUMERIC(12,2), prefs JSONB`,
		since: "2020-01-02 03:04:05+00",
		viaProxy: func(t testing.TB, dsn, addr string) string {
			u, err := url.Parse(dsn)
			if err != nil || u.Host == "" {
				t.Skip("the PostgreSQL DSN is not a URL; skipping the outage test")
			}
			u.Host = addr
			return u.String()
		}}
	mysqlServer = server{driver: "mysql", env: "SLUICE_TEST_MYSQL_DSN", name: "MySQL/MariaDB",
		customersDDL: `id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(100) NOT NULL,
			tier VARCHAR(50), signed_up_at DATETIME, balance DECIMAL(12,2), prefs JSON`,
		since: "2020-01-02 03:04:05",
		viaProxy: func(t testing.TB, dsn, addr string) string {
			c, err := mysql.ParseDSN(dsn)
			require.NoError(t, err)
			c.Net, c.Addr = "tcp", addr
			return c.FormatDSN()
		}}
)

var tableSeq atomic.Int64

// open connects to the server named by its environment variable (or skips)
// and creates uniquely named customers_<sfx> and coupons_<sfx> tables,
// dropped at the end of the test.
func (s server) open(t *testing.T) (dsn, sfx string) {
	dsn = os.Getenv(s.env)
	if dsn == "" {
		t.Skipf("%s not set: skipping %s lookups (CI sets it)", s.env, s.name)
	}
	ctx := context.Background()
	db, err := productdb.Open(ctx, productdb.Config{Driver: s.driver, DSN: dsn})
	require.NoError(t, err)
	sfx = strconv.FormatInt(time.Now().UnixNano(), 36) + "_" + strconv.Itoa(os.Getpid()) + "_" + strconv.FormatInt(tableSeq.Add(1), 10)
	script := fmt.Sprintf(`
		CREATE TABLE customers_%[1]s (%[2]s);
		CREATE TABLE coupons_%[1]s (code VARCHAR(20) PRIMARY KEY, percent INTEGER NOT NULL);
		INSERT INTO customers_%[1]s (id, name, email, tier, signed_up_at, balance, prefs) VALUES
		  (1, 'Ada Lovelace', 'ada@example.com', 'gold; founder', '%[3]s', 1234.50, '{"lang": "en", "tags": ["vip"]}'),
		  (2, 'Grace Hopper', 'grace@example.com', NULL, NULL, NULL, NULL);
		INSERT INTO coupons_%[1]s (code, percent) VALUES ('VIP25', 25);`, sfx, s.customersDDL, s.since)
	t.Cleanup(func() {
		_, err1 := db.Exec("DROP TABLE IF EXISTS customers_" + sfx)
		_, err2 := db.Exec("DROP TABLE IF EXISTS coupons_" + sfx)
		db.Close()
		require.NoError(t, err1)
		require.NoError(t, err2)
	})
	require.NoError(t, productdb.ExecScript(ctx, db, script))
	return dsn, sfx
}

// serverCatalog points the test catalog at the unique tables and maps the
// richer columns (timestamp, decimal, JSON) into the body.
func serverCatalog(t testing.TB, sfx string, more ...func(*catalog.Config)) *catalog.Catalog {
	return loadCatalog(t, func(c *catalog.Config) {
		for name, typ := range c.Types {
			for i := range typ.Lookups {
				typ.Lookups[i].Table += "_" + sfx
			}
			c.Types[name] = typ
		}
		for _, f := range more {
			f(c)
		}
		setType(c, "order_placed", func(t *catalog.Type) {
			t.Lookups[0].Columns = []string{"name", "tier", "signed_up_at", "balance", "prefs"}
			// MariaDB has no JSON wire type: its JSON columns arrive as text.
			t.Body = `{name: .lookups.customer.name, tier: .lookups.customer.tier, since: .lookups.customer.signed_up_at,
				balance: .lookups.customer.balance,
				prefs: (.lookups.customer.prefs | if type == "string" then fromjson else . end),
				discount: (.lookups.coupon.percent // 0)}`
		})
	})
}

func TestPostgresLookups(t *testing.T) { testServerLookups(t, postgresServer) }
func TestMySQLLookups(t *testing.T)    { testServerLookups(t, mysqlServer) }

func testServerLookups(t *testing.T, s server) {
	dsn, sfx := s.open(t)
	ctx := context.Background()
	dbc := productdb.Config{Driver: s.driver, DSN: dsn}
	db, err := productdb.Open(ctx, dbc)
	require.NoError(t, err)
	defer db.Close()
	cfg := fastConfig(dbc)
	cfg.LookupGrace = 300 * time.Millisecond
	h := newHarness(t, 1, cfg, db, serverCatalog(t, sfx))
	h.start()

	ada := `{"name":"Ada Lovelace","tier":"gold; founder","since":"2020-01-02T03:04:05Z","balance":1234.50,"prefs":{"lang":"en","tags":["vip"]},"discount":%d}`
	grace := `{"name":"Grace Hopper","tier":null,"since":null,"balance":null,"prefs":null,"discount":0}`
	abcReason := "lookup missing: customers_" + sfx + "/abc" // MySQL compares 'abc' to a BIGINT as 0
	if s.driver == "postgres" {
		abcReason = "lookup key invalid: customer" // SQLSTATE 22P02: retrying cannot help
	}
	steps := []struct {
		key    string
		data   map[string]any
		body   string // forwarded
		reason string // parked
	}{
		{"c:1", order(1, 1, 1, "VIP25", 0), fmt.Sprintf(ada, 25), ""},
		{"c:2", order(2, 2, 1, nil, 0), grace, ""},
		{"c:1", order(3, "1", 1, "NOPE", 1), fmt.Sprintf(ada, 0), ""},
		{"c:42", order(4, 42, 1, nil, 0), "", "lookup missing: customers_" + sfx + "/42"},
		{"c:abc", order(5, "abc", 1, nil, 0), "", abcReason},
		{"c:2", order(6, 2, 1, nil, 1), grace, ""},
	}
	var want []string
	for _, st := range steps {
		id := h.publish("order_placed", st.key, st.data)
		if st.reason == "" {
			want = append(want, id, st.body)
		}
	}
	got := h.waitDispatched(len(want)/2, 20*time.Second)
	for i, d := range got {
		require.Equal(t, want[2*i], d.Req.EventID)
		require.JSONEq(t, want[2*i+1], string(d.Req.Body), d.Req.EventID)
	}
	for _, st := range steps {
		if st.reason != "" {
			pm := h.waitParked("order_placed", st.key, 10*time.Second)
			require.Equal(t, st.reason, pm.Header.Get(lane.HeaderParkReason))
		}
	}
	require.Equal(t, uint64(1), h.svc.Stats().Cache.Hits, "the second c:2 lookup comes from the cache")

	// The start-time check against the real server names the catalog key.
	bad := serverCatalog(t, sfx, func(c *catalog.Config) { c.Types["review"].Lookups[0].Columns[0] = "nickname" })
	svc, err := enricher.New(cfg, enricher.Deps{NC: h.nc, JS: h.js, Names: h.names, Catalog: bad, DB: db})
	require.NoError(t, err)
	err = svc.Check(ctx)
	require.ErrorContains(t, err, "catalog.types.review.lookups[0]")
	require.NotContains(t, err.Error(), "order_placed")
}

func TestPostgresOutageHoldsLane(t *testing.T) { testServerOutage(t, postgresServer) }
func TestMySQLOutageHoldsLane(t *testing.T)    { testServerOutage(t, mysqlServer) }

// testServerOutage cuts the network between the enricher and the database
// server: lookups fail with connection errors, the lane holds (well past
// lookup_grace) and parks nothing, then catches up in order.
func testServerOutage(t *testing.T, s server) {
	dsn, sfx := s.open(t)
	ctx := context.Background()
	target := proxyTarget(t, s, dsn)
	proxy := meshtest.NewTCPProxy(t, target)
	dbc := productdb.Config{Driver: s.driver, DSN: s.viaProxy(t, dsn, proxy.Addr())}
	db, err := productdb.Open(ctx, dbc)
	require.NoError(t, err)
	defer db.Close()
	cfg := fastConfig(dbc)
	cfg.LookupGrace = 50 * time.Millisecond
	cfg.Cache.Size = -1
	cfg.QueryTimeout = time.Second
	h := newHarness(t, 1, cfg, db, serverCatalog(t, sfx))
	h.start()

	proxy.Down()
	ids := []string{
		h.publish("order_placed", "c:1", order(1, 1, 1, nil, 0)),
		h.publish("order_placed", "c:2", order(2, 2, 1, nil, 0)),
	}
	start := time.Now()
	require.Eventually(t, func() bool {
		return h.lane0().Retries >= 5 && time.Since(start) > 10*cfg.LookupGrace
	}, 20*time.Second, 10*time.Millisecond)
	require.NotEmpty(t, h.lane0().LastError)
	require.Zero(t, h.count(h.names.DispatchStream()))
	require.Zero(t, h.count(h.names.ParkedStream()), "a database outage must never park")

	proxy.Up()
	got := h.waitDispatched(2, 20*time.Second)
	require.Equal(t, ids, []string{got[0].Req.EventID, got[1].Req.EventID})
	require.Zero(t, h.count(h.names.ParkedStream()))
}

func proxyTarget(t testing.TB, s server, dsn string) string {
	if s.driver == "mysql" {
		c, err := mysql.ParseDSN(dsn)
		require.NoError(t, err)
		if c.Net != "tcp" {
			t.Skip("the MySQL DSN does not use TCP; skipping the outage test")
		}
		return c.Addr
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		t.Skip("the PostgreSQL DSN is not a URL; skipping the outage test")
	}
	host := u.Host
	if !strings.Contains(host, ":") {
		host += ":5432"
	}
	return host
}
