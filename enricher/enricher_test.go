package enricher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"sluice.dev/enricher"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
)

var customers = map[int][2]string{ // id → name, email (testdata/seed.sql)
	1: {"Ada Lovelace", "ada@example.com"}, 2: {"Grace Hopper", "grace@example.com"},
	3: {"Alan Turing", "alan@example.com"}, 4: {"Edsger Dijkstra", "edsger@example.com"},
	5: {"Barbara Liskov", "barbara@example.com"}, 6: {"Donald Knuth", "don@example.com"},
	7: {"Ken Thompson", "ken@example.com"}, 8: {"Dennis Ritchie", "dmr@example.com"},
	9: {"Margaret Hamilton", "margaret@example.com"}, 10: {"John McCarthy", "john@example.com"},
}

func TestOrderAndBodiesAcrossKeysAndPartitions(t *testing.T) {
	db, dbc := openSQLite(t, "")
	h := newHarness(t, 4, fastConfig(dbc), db, loadCatalog(t, nil))
	h.start()

	const perKey = 20
	coupons := []any{nil, "VIP25", nil, "WELCOME10", "NOPE"}
	discounts := []int{0, 25, 0, 10, 0}
	want := map[string]string{}  // event id → expected body
	ids := map[string][]string{} // key → event ids in publish order
	for seq := 0; seq < perKey; seq++ {
		for c := 1; c <= 10; c++ {
			key := "customer:" + strconv.Itoa(c)
			oid := c*1000 + seq
			id := h.publish("order_placed", key, order(oid, c, 10.5, coupons[seq%5], seq))
			ids[key] = append(ids[key], id)
			want[id] = fmt.Sprintf(`{"order_id":%d,"seq":%d,"email":%q,"name":%q,"total":10.5,"discount_percent":%d,"tier":%s,"customer_since":%s}`,
				oid, seq, customers[c][1], customers[c][0], discounts[seq%5], tierJSON(c), sinceJSON(c))
		}
		for _, key := range []string{"contact.a", "contact b"} {
			data := map[string]any{"customer_id": 7, "email": key + "@example.com", "seq": seq}
			id := h.publish("customer_updated", key, data)
			ids[key] = append(ids[key], id)
			b, _ := json.Marshal(data)
			want[id] = string(b)
		}
	}
	total := perKey * 12
	got := h.waitDispatched(total, 30*time.Second)

	byKey := map[string][]string{}
	for _, d := range got {
		r := d.Req
		require.Equal(t, r.EventID, d.MsgID, "Nats-Msg-Id is the event id")
		require.Equal(t, h.names.DispatchSubject(h.names.PartitionOf(r.Key), r.Type, topology.KeyToken(r.Key)), d.Subject)
		require.JSONEq(t, want[r.EventID], string(r.Body), r.EventID)
		require.False(t, r.AcceptedAt.IsZero())
		require.Equal(t, "2024-05-06T07:08:09Z", r.OccurredAt.UTC().Format(time.RFC3339))
		switch r.Type {
		case "order_placed":
			var b struct {
				OrderID int `json:"order_id"`
			}
			require.NoError(t, json.Unmarshal(r.Body, &b))
			require.Equal(t, "order:"+strconv.Itoa(b.OrderID), r.IDKey)
			require.Equal(t, [4]string{"deals", "create", "POST", "/deals"}, [4]string{r.Object, r.Mode, r.Method, r.Path})
			require.Equal(t, ".id", r.IDFrom)
		case "customer_updated":
			require.Equal(t, r.Key, r.IDKey)
			require.Equal(t, [4]string{"contacts", "upsert", "PATCH", "/contacts/{crm_id}"}, [4]string{r.Object, r.Mode, r.UpdateMethod, r.UpdatePath})
		}
		byKey[r.Key] = append(byKey[r.Key], r.EventID)
	}
	require.Equal(t, ids, byKey, "per-key order differs")
	partitions := map[int]bool{}
	for key := range ids {
		partitions[h.names.PartitionOf(key)] = true
	}
	require.Greater(t, len(partitions), 1, "keys should spread over partitions")
	require.Zero(t, h.count(h.names.ParkedStream()))
}

func tierJSON(c int) string {
	switch c {
	case 1:
		return `"gold; founder"`
	case 3:
		return "null"
	case 2, 4, 10:
		return `"silver"`
	case 6, 7:
		return `"bronze"`
	}
	return `"gold"`
}

func sinceJSON(c int) string {
	switch c {
	case 1:
		return `"2020-01-02T03:04:05Z"`
	case 2:
		return `"2021-06-07T08:09:10Z"`
	}
	return "null"
}

func TestMissingRowInsertedDuringGraceIsForwarded(t *testing.T) {
	db, dbc := openSQLite(t, "")
	cfg := fastConfig(dbc)
	cfg.LookupGrace = time.Minute
	h := newHarness(t, 1, cfg, db, loadCatalog(t, nil))
	h.start()
	first := h.publish("order_placed", "customer:42", order(1, 42, 1, nil, 0))
	second := h.publish("order_placed", "customer:42", order(2, 42, 2, nil, 1))

	require.Eventually(t, func() bool { return h.lane0().Retries >= 5 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, h.count(h.names.DispatchStream()), "the lane must hold while the row is missing")
	require.Contains(t, h.lane0().LastError, "customers/42")

	_, err := db.Exec(`INSERT INTO customers (id, name, email) VALUES (42, 'Late Arrival', 'late@example.com')`)
	require.NoError(t, err)
	got := h.waitDispatched(2, 10*time.Second)
	require.Equal(t, []string{first, second}, []string{got[0].Req.EventID, got[1].Req.EventID})
	require.Contains(t, string(got[0].Req.Body), `"email":"late@example.com"`)
	require.Zero(t, h.count(h.names.ParkedStream()))
}

func TestMissingRowAfterGraceIsParked(t *testing.T) {
	db, dbc := openSQLite(t, "")
	cfg := fastConfig(dbc)
	cfg.LookupGrace = 400 * time.Millisecond
	h := newHarness(t, 1, cfg, db, loadCatalog(t, nil))
	h.start()
	before := time.Now()
	_, parkedBody := h.event("order_placed", "customer:42", order(1, 42, 1, nil, 0))
	h.publishRaw(h.names.EventSubject("order_placed", "customer:42"), "ev-parked", parkedBody)
	next := h.publish("order_placed", "customer:1", order(2, 1, 2, nil, 0))

	pm := h.waitParked("order_placed", "customer:42", 10*time.Second)
	require.Equal(t, "lookup missing: customers/42", pm.Header.Get(lane.HeaderParkReason))
	require.Equal(t, "enricher", pm.Header.Get(lane.HeaderParkStage))
	require.Equal(t, parkedBody, pm.Data)
	at, err := time.Parse(time.RFC3339Nano, pm.Header.Get(lane.HeaderParkedAt))
	require.NoError(t, err)
	require.GreaterOrEqual(t, at.Sub(before), cfg.LookupGrace, "parked before the grace ran out")

	got := h.waitDispatched(1, 10*time.Second)
	require.Equal(t, next, got[0].Req.EventID, "the lane goes on after parking")
	require.Equal(t, uint64(1), h.lane0().Parked)
}

// TestDatabaseOutageHoldsLaneWithoutParking locks the SQLite database the
// way a long write transaction or a backup does (rollback journal, an
// EXCLUSIVE lock): every lookup fails with "database is locked". The lane
// must hold, far beyond lookup_grace, park nothing, and go on in order once
// the lock is released.
func TestDatabaseOutageHoldsLaneWithoutParking(t *testing.T) {
	db, dbc := openSQLite(t, "_pragma=busy_timeout(20)&_pragma=journal_mode(DELETE)")
	cfg := fastConfig(dbc)
	cfg.LookupGrace = 50 * time.Millisecond
	cfg.Cache.Size = -1
	h := newHarness(t, 1, cfg, db, loadCatalog(t, nil))
	h.start()

	ctx := context.Background()
	locker, err := productdb.Open(ctx, dbc)
	require.NoError(t, err)
	defer locker.Close()
	conn, err := locker.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "BEGIN EXCLUSIVE")
	require.NoError(t, err)

	var ids []string
	for i := 1; i <= 3; i++ {
		ids = append(ids, h.publish("order_placed", "customer:"+strconv.Itoa(i), order(i, i, 1, nil, 0)))
	}
	start := time.Now()
	require.Eventually(t, func() bool {
		return h.lane0().Retries >= 8 && time.Since(start) > 10*cfg.LookupGrace
	}, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, h.lane0().LastError, "locked")
	require.Zero(t, h.count(h.names.DispatchStream()))
	require.Zero(t, h.count(h.names.ParkedStream()), "a database outage must never park")

	_, err = conn.ExecContext(ctx, "COMMIT")
	require.NoError(t, err)
	got := h.waitDispatched(3, 10*time.Second)
	for i, d := range got {
		require.Equal(t, ids[i], d.Req.EventID)
	}
	require.Zero(t, h.count(h.names.ParkedStream()))
}

func TestMappingErrorParksAndLaneGoesOn(t *testing.T) {
	db, dbc := openSQLite(t, "")
	h := newHarness(t, 1, fastConfig(dbc), db, loadCatalog(t, nil))
	h.start()
	h.publish("payment", "pay:1", map[string]any{"amount": "12x"})
	ok := h.publish("payment", "pay:2", map[string]any{"amount": "12.5"})

	pm := h.waitParked("payment", "pay:1", 10*time.Second)
	require.Regexp(t, `^mapping error: body: .*12x`, pm.Header.Get(lane.HeaderParkReason))
	got := h.waitDispatched(1, 10*time.Second)
	require.Equal(t, ok, got[0].Req.EventID)
	require.JSONEq(t, `{"amount":12.5,"currency":"EUR"}`, string(got[0].Req.Body))
	require.Equal(t, "send", got[0].Req.Mode)
	require.Equal(t, "/payments", got[0].Req.Path)
}

func TestInvalidRawEventsAreParkedWithTheirFields(t *testing.T) {
	db, dbc := openSQLite(t, "")
	h := newHarness(t, 1, fastConfig(dbc), db, loadCatalog(t, nil))
	h.start()
	cases := []struct {
		name, typ, key string
		body           string
		reason         string
		fields         []string
	}{
		{"schema", "order_placed", "k1",
			`{"id":"i1","type":"order_placed","key":"k1","occurred_at":"2024-01-01T00:00:00Z","data":{"order_id":"x","total":1}}`,
			"invalid event", []string{"data.customer_id: required", "data.order_id: "}},
		{"envelope", "order_placed", "k2", `{"id":"has space","type":"order_placed","key":"k2","data":{}}`,
			"invalid event", []string{"id: must be", "occurred_at: required"}},
		{"not json", "order_placed", "k3", `order #3`, "invalid event", []string{"not a JSON object"}},
		{"unknown type", "nosuch", "k4", `{"id":"i4","type":"nosuch","key":"k4","occurred_at":"2024-01-01T00:00:00Z","data":{}}`,
			"unknown event type", nil},
		{"wrong key token", "customer_updated", "k5",
			`{"id":"i5","type":"customer_updated","key":"other","occurred_at":"2024-01-01T00:00:00Z","data":{"customer_id":1,"email":"e"}}`,
			"subject does not match envelope", nil},
		{"wrong type token", "payment", "k6",
			`{"id":"i6","type":"customer_updated","key":"k6","occurred_at":"2024-01-01T00:00:00Z","data":{"customer_id":1,"email":"e"}}`,
			"subject does not match envelope", nil},
	}
	for _, c := range cases {
		h.publishRaw(h.names.EventSubject(c.typ, c.key), "raw-"+c.key, []byte(c.body))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pm := h.waitParked(c.typ, c.key, 10*time.Second)
			require.Equal(t, c.reason, pm.Header.Get(lane.HeaderParkReason))
			require.Equal(t, c.body, string(pm.Data))
			for _, f := range c.fields {
				require.Contains(t, pm.Header.Get(enricher.HeaderInvalidFields), f)
			}
			if c.fields == nil {
				require.Empty(t, pm.Header.Get(enricher.HeaderInvalidFields))
			}
		})
	}
	require.Zero(t, h.count(h.names.DispatchStream()))
}

func TestCacheCountsHitsAndMisses(t *testing.T) {
	cases := []struct {
		name         string
		size         int
		hits, misses uint64
	}{
		{"enabled", 0, 4, 1},
		{"disabled", -1, 0, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, dbc := openSQLite(t, "")
			cfg := fastConfig(dbc)
			cfg.Cache.Size = c.size
			h := newHarness(t, 1, cfg, db, loadCatalog(t, nil))
			h.start()
			for i := 0; i < 5; i++ {
				h.publish("order_placed", "customer:1", order(i, 1, 1, nil, i))
			}
			h.waitDispatched(5, 10*time.Second)
			st := h.svc.Stats()
			require.Equal(t, c.hits, st.Cache.Hits)
			require.Equal(t, c.misses, st.Cache.Misses)

			// The same numbers over NATS: the status endpoint and $SRV.STATS.
			resp, err := h.nc.Request(h.names.Config().Prefix+".enricher.status", nil, 5*time.Second)
			require.NoError(t, err)
			var status enricher.Status
			require.NoError(t, json.Unmarshal(resp.Data, &status))
			require.Equal(t, enricher.ServiceVersion, status.Version)
			require.Equal(t, "sqlite", status.Driver)
			require.Contains(t, status.Types, "order_placed")
			require.Equal(t, c.hits, status.Cache.Hits)
			require.Len(t, status.Lanes, 1)
			require.Equal(t, uint64(5), status.Lanes[0].Acked)

			resp, err = h.nc.Request("$SRV.STATS."+enricher.ServiceName, nil, 5*time.Second)
			require.NoError(t, err)
			var ms micro.Stats
			require.NoError(t, json.Unmarshal(resp.Data, &ms))
			require.Equal(t, enricher.ServiceName, ms.Name)
			require.NotEmpty(t, ms.Endpoints)
			var data enricher.Stats
			require.NoError(t, json.Unmarshal(ms.Endpoints[0].Data, &data))
			require.Equal(t, c.misses, data.Cache.Misses)
		})
	}
}
