package inbound_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
)

const secret = "whsec_c2x1aWNlLXRlc3Qtc2VjcmV0LTEyMzQ1Njc4OTA="

// dbTarget is a database the writer is tested against.
type dbTarget struct {
	driver, env string
	// dsn rewrites the DSN to go through a proxy at addr (outage tests).
	viaProxy func(t testing.TB, dsn, addr string) string
}

var (
	sqliteDB   = dbTarget{driver: "sqlite"}
	postgresDB = dbTarget{driver: "postgres", env: "SLUICE_TEST_POSTGRES_DSN",
		viaProxy: func(t testing.TB, dsn, addr string) string {
			cfg, err := urlWithHost(dsn, addr)
			require.NoError(t, err)
			return cfg
		}}
	mysqlDB = dbTarget{driver: "mysql", env: "SLUICE_TEST_MYSQL_DSN",
		viaProxy: func(t testing.TB, dsn, addr string) string {
			c, err := mysql.ParseDSN(dsn)
			require.NoError(t, err)
			c.Net, c.Addr = "tcp", addr
			return c.FormatDSN()
		}}
	allDBs = []dbTarget{sqliteDB, postgresDB, mysqlDB}
)

var seq atomic.Int64

// env is one test's NATS server, database tables and inbound config.
type env struct {
	t      *testing.T
	srv    *server.Server
	names  topology.Names
	js     jetstream.JetStream
	db     *sql.DB
	target dbTarget
	dsn    string
	sfx    string
	cfg    inbound.Config
	// proxyDSN reaches the server through the outage proxy.
	proxyDSN string
}

// newEnv starts a server, opens the database (or skips when its DSN is not
// set) and creates uniquely named tables for the sample catalog, with
// leads 1..3 in status "new".
func newEnv(t *testing.T, target dbTarget) *env {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "inbound.db") + "?_pragma=busy_timeout(200)&_pragma=journal_mode(WAL)"
	if target.env != "" {
		if dsn = os.Getenv(target.env); dsn == "" {
			t.Skipf("%s not set: skipping the %s tests (CI sets it)", target.env, target.driver)
		}
	}
	ctx := context.Background()
	db, err := productdb.Open(ctx, productdb.Config{Driver: target.driver, DSN: dsn})
	require.NoError(t, err)
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + "_" + strconv.Itoa(os.Getpid()) + "_" + strconv.FormatInt(seq.Add(1), 10)
	e := &env{t: t, db: db, target: target, dsn: dsn, sfx: sfx}
	tables := []string{"leads", "appointments", "lead_notes", "applied", "versions"}
	t.Cleanup(func() {
		for _, tb := range tables {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + e.table(tb))
		}
		db.Close()
	})
	require.NoError(t, productdb.ExecScript(ctx, db, fmt.Sprintf(`
		CREATE TABLE leads_%[1]s (id BIGINT PRIMARY KEY, status VARCHAR(40) NOT NULL CHECK (status <> 'bogus'));
		CREATE TABLE appointments_%[1]s (id BIGINT PRIMARY KEY, lead_id BIGINT NOT NULL,
			scheduled_at VARCHAR(40) NOT NULL, location VARCHAR(200) NOT NULL);
		CREATE TABLE lead_notes_%[1]s (id VARCHAR(60) PRIMARY KEY, lead_id BIGINT NOT NULL,
			author VARCHAR(100) NOT NULL, body TEXT NOT NULL, created_at VARCHAR(40) NOT NULL);
		INSERT INTO leads_%[1]s (id, status) VALUES (1, 'new'), (2, 'new'), (3, 'new');`, sfx)))
	e.srv = meshtest.RunServer(t, "")
	tc := meshtest.Topology(4)
	tc.AckWait = 2 * time.Second
	e.names = topology.New(tc)
	_, e.js = meshtest.Connect(t, e.srv.ClientURL())
	cat, _, err := inbound.LoadCatalog(inbound.Config{})
	require.NoError(t, err)
	for name, typ := range cat.Types {
		typ.Write.Table += "_" + sfx
		for i := range typ.Checks {
			if typ.Checks[i].Exists != nil {
				typ.Checks[i].Exists.Table += "_" + sfx
			}
		}
		cat.Types[name] = typ
	}
	e.cfg = inbound.Config{
		HTTPAddr: "127.0.0.1:0",
		Sources:  []inbound.Source{{Name: "crm", Secrets: []string{"whsec_b2xkLXNlY3JldA==", secret}}},
		DB:       productdb.Config{Driver: target.driver, DSN: dsn},
		Types:    cat.Types, AppliedTable: e.table("applied"), VersionsTable: e.table("versions"),
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}
	return e
}

func (e *env) table(name string) string { return name + "_" + e.sfx }

// start runs a service on its own NATS connection (so a test can kill it).
func (e *env) start(mut ...func(*inbound.Config, *inbound.Deps)) (*inbound.Service, *nats.Conn) {
	e.t.Helper()
	nc, js := meshtest.Connect(e.t, e.srv.ClientURL())
	d, err := productdb.DialectFor(e.target.driver)
	require.NoError(e.t, err)
	cfg := e.cfg
	deps := inbound.Deps{NC: nc, JS: js, Names: e.names, DB: e.db, Dialect: d, Logger: zerolog.Nop()}
	for _, m := range mut {
		m(&cfg, &deps)
	}
	s, err := inbound.New(cfg, deps)
	require.NoError(e.t, err)
	require.NoError(e.t, s.Start(context.Background()))
	e.t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s, nc
}

// post signs body with the Standard Webhooks secret and posts it.
func post(t testing.TB, s *inbound.Service, id string, body []byte, mut ...func(*http.Request)) (int, inbound.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+s.Addr()+inbound.DefaultPath, bytes.NewReader(body))
	require.NoError(t, err)
	require.NoError(t, inbound.SignHeaders(req.Header, secret, id, time.Now(), body))
	for _, m := range mut {
		m(req)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var r inbound.Response
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return resp.StatusCode, r
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func actor(kind, name string) map[string]any { return map[string]any{"kind": kind, "name": name} }

func statusItem(id string, lead int, status string, at time.Time, who map[string]any) map[string]any {
	return map[string]any{"id": id, "type": "lead_status_changed", "occurred_at": at.Format(time.RFC3339), "actor": who,
		"data": map[string]any{"lead_id": lead, "status": status, "updated_at": at.Format(time.RFC3339)}}
}

func apptItem(id string, appt, lead, rev int, loc string) map[string]any {
	return map[string]any{"id": id, "type": "appointment_booked", "occurred_at": "2026-03-01T11:00:00Z",
		"actor": actor("user", "agent.priya"), "data": map[string]any{"appointment_id": appt, "lead_id": lead,
			"scheduled_at": "2026-03-04T16:30:00+05:30", "location": loc, "revision": rev}}
}

func noteItem(id string, lead int, body string) map[string]any {
	return map[string]any{"id": id, "type": "note_added", "occurred_at": "2026-03-01T11:05:00Z",
		"actor": actor("user", "agent.priya"), "data": map[string]any{"note_id": "note_" + id, "lead_id": lead, "body": body}}
}

func (e *env) count(table, where string, args ...any) int {
	e.t.Helper()
	var n int
	q := "SELECT COUNT(*) FROM " + e.table(table)
	if where != "" {
		q += " WHERE " + where
	}
	require.NoError(e.t, e.db.QueryRow(q, args...).Scan(&n))
	return n
}

func (e *env) leadStatus(id int) string {
	e.t.Helper()
	var s string
	require.NoError(e.t, e.db.QueryRow("SELECT status FROM "+e.table("leads")+" WHERE id = "+e.ph()+"", id).Scan(&s))
	return s
}

func (e *env) ph() string {
	if e.target.driver == "postgres" {
		return "$1"
	}
	return "?"
}

// settled waits until n webhook ids are recorded in the applied table.
func (e *env) settled(n int) {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return e.count("applied", "") >= n }, 20*time.Second, 20*time.Millisecond,
		"want %d settled webhooks", n)
	require.Equal(e.t, n, e.count("applied", ""))
}

func urlWithHost(dsn, addr string) (string, error) {
	u, err := neturl.Parse(dsn)
	if err != nil {
		return "", err
	}
	u.Host = addr
	return u.String(), nil
}

func topologyNew(c topology.Config) topology.Names { return topology.New(c) }

func productdbConfig(dsn string) productdb.Config {
	return productdb.Config{Driver: "sqlite", DSN: dsn}
}

func depsFor(t *testing.T, e *env) inbound.Deps {
	nc, js := meshtest.Connect(t, e.srv.ClientURL())
	return inbound.Deps{NC: nc, JS: js, Names: e.names, DB: e.db, Logger: zerolog.Nop()}
}

// tlsState marks a test request as having come over TLS (for {url}).
var tlsState = &tls.ConnectionState{}

// parked returns the bodies and headers of the inbound stage's parked
// messages whose subject ends in key token tok, as one text.
func (e *env) parked(t *testing.T, tok string) string {
	t.Helper()
	ctx := context.Background()
	st, err := e.js.Stream(ctx, e.names.ParkedStream())
	require.NoError(t, err)
	var b strings.Builder
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(e.names.ParkedKeyFilter(topology.StageInbound, tok)))
		if err != nil {
			break
		}
		b.WriteString(string(m.Data))
		for k, v := range m.Header {
			b.WriteString("\n" + k + ": " + strings.Join(v, ","))
		}
		b.WriteString("\n---\n")
		seq = m.Sequence + 1
	}
	return b.String()
}

// lanesParked is the number of messages the service's lanes parked
// (including those parked behind an isolated key).
func lanesParked(s *inbound.Service) int {
	n := 0
	for _, l := range s.Stats().Lanes {
		n += int(l.Parked)
	}
	return n
}
