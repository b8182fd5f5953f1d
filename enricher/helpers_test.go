package enricher_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/enricher"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
)

// loadCatalog compiles testdata/catalog.yaml after mutate (may be nil).
func loadCatalog(t testing.TB, mutate func(*catalog.Config)) *catalog.Catalog {
	t.Helper()
	b, err := os.ReadFile("testdata/catalog.yaml")
	require.NoError(t, err)
	var cfg catalog.Config
	require.NoError(t, yaml.Unmarshal(b, &cfg))
	if mutate != nil {
		mutate(&cfg)
	}
	cat, err := catalog.Compile(cfg, os.DirFS("testdata/schemas"))
	require.NoError(t, err)
	return cat
}

// openSQLite creates a product database in t.TempDir() seeded with
// testdata/seed.sql. params, when set, replaces the default pragmas.
func openSQLite(t testing.TB, params string) (*sql.DB, productdb.Config) {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "product.db")
	if params != "" {
		dsn += "?" + params
	}
	cfg := productdb.Config{Driver: productdb.DriverSQLite, DSN: dsn}
	db, err := productdb.Open(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	seed, err := os.ReadFile("testdata/seed.sql")
	require.NoError(t, err)
	require.NoError(t, productdb.ExecScript(context.Background(), db, string(seed)))
	return db, cfg
}

type harness struct {
	t     testing.TB
	nc    *nats.Conn
	js    jetstream.JetStream
	names topology.Names
	svc   *enricher.Service
	n     int
}

// fastConfig has short retries so tests settle quickly.
func fastConfig(db productdb.Config) enricher.Config {
	return enricher.Config{DB: db, RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond}
}

// newHarness starts a server, a topology of partitions and a (not started)
// service over db.
func newHarness(t testing.TB, partitions int, cfg enricher.Config, db *sql.DB, cat *catalog.Catalog) *harness {
	t.Helper()
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(partitions))
	require.NoError(t, names.Ensure(context.Background(), js))
	d, err := productdb.DialectFor(cfg.WithDefaults().DB.Driver)
	require.NoError(t, err)
	svc, err := enricher.New(cfg, enricher.Deps{NC: nc, JS: js, Names: names, Catalog: cat, DB: db, Dialect: d,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(testLogLevel)})
	require.NoError(t, err)
	return &harness{t: t, nc: nc, js: js, names: names, svc: svc}
}

func (h *harness) start() {
	h.t.Helper()
	require.NoError(h.t, h.svc.Start(context.Background()))
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(h.t, h.svc.Stop(ctx))
	})
}

// event builds an envelope of typ and key with data.
func (h *harness) event(typ, key string, data any) (id string, body []byte) {
	h.n++
	id = fmt.Sprintf("ev-%d", h.n)
	d, err := json.Marshal(data)
	require.NoError(h.t, err)
	body, err = json.Marshal(map[string]any{"id": id, "type": typ, "key": key, "source": "test",
		"occurred_at": "2024-05-06T07:08:09Z", "data": json.RawMessage(d)})
	require.NoError(h.t, err)
	return id, body
}

// publish publishes an event the way a raw JetStream producer does.
func (h *harness) publish(typ, key string, data any) string {
	id, body := h.event(typ, key, data)
	h.publishRaw(h.names.EventSubject(typ, key), id, body)
	return id
}

func (h *harness) publishRaw(subject, id string, body []byte) {
	h.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	m.Header.Set(nats.MsgIdHdr, id)
	_, err := h.js.PublishMsg(context.Background(), m)
	require.NoError(h.t, err)
}

type dispatched struct {
	Subject string
	MsgID   string
	Req     crmreq.Request
}

func (h *harness) count(stream string) uint64 {
	s, err := h.js.Stream(context.Background(), stream)
	require.NoError(h.t, err)
	info, err := s.Info(context.Background())
	require.NoError(h.t, err)
	return info.State.Msgs
}

// waitDispatched waits for exactly n requests on the dispatch stream and
// returns them in stream order.
func (h *harness) waitDispatched(n int, within time.Duration) []dispatched {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.count(h.names.DispatchStream()) >= uint64(n) },
		within, 10*time.Millisecond, "dispatch stream never reached %d messages", n)
	s, err := h.js.Stream(context.Background(), h.names.DispatchStream())
	require.NoError(h.t, err)
	var out []dispatched
	for seq := uint64(1); len(out) < n; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		require.NoError(h.t, err)
		var r crmreq.Request
		require.NoError(h.t, json.Unmarshal(m.Data, &r))
		out = append(out, dispatched{Subject: m.Subject, MsgID: m.Header.Get(nats.MsgIdHdr), Req: r})
	}
	require.Equal(h.t, uint64(n), h.count(h.names.DispatchStream()), "more requests than expected")
	return out
}

// waitParked waits for the event of typ and key on the parked stream.
func (h *harness) waitParked(typ, key string, within time.Duration) *jetstream.RawStreamMsg {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), h.names.ParkedStream())
	require.NoError(h.t, err)
	var pm *jetstream.RawStreamMsg
	require.Eventually(h.t, func() bool {
		pm, err = s.GetLastMsgForSubject(context.Background(),
			h.names.ParkedSubject(topology.StageEnricher, typ, topology.KeyToken(key)))
		return err == nil
	}, within, 10*time.Millisecond, "%s/%s was not parked", typ, key)
	return pm
}

func (h *harness) lane0() lane.Stats {
	st := h.svc.Stats().Lanes
	require.NotEmpty(h.t, st)
	return st[0]
}

func order(orderID, customer any, total float64, coupon any, seq int) map[string]any {
	m := map[string]any{"order_id": orderID, "customer_id": customer, "total": total, "seq": seq}
	if coupon != nil {
		m["coupon"] = coupon
	}
	return m
}

var testLogLevel = func() zerolog.Level {
	if l, err := zerolog.ParseLevel(os.Getenv("SLUICE_TEST_LOG")); err == nil && l != zerolog.NoLevel {
		return l
	}
	return zerolog.WarnLevel
}()
