package enricher_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/enricher"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// TestHandlerOutcomes calls the handler directly with the message a lane
// would hand it, for the decisions that need no stream to observe.
func TestHandlerOutcomes(t *testing.T) {
	db, dbc := openSQLite(t, "")
	cfg := fastConfig(dbc)
	cfg.LookupGrace = time.Minute
	cat := loadCatalog(t, func(c *catalog.Config) {
		p := c.Types["payment"]
		p.CRM.IDKey = ".data.ref"
		c.Types["payment"] = p
	})
	h := newHarness(t, 2, cfg, db, cat)
	handle := h.svc.Handler()

	cases := []struct {
		name     string
		typ, key string
		data     any
		age      time.Duration // since the lane first saw it
		kind     lane.Kind
		reason   string
		body     string // forwarded body, JSON
		idKey    string
	}{
		{"string key matches integer column", "order_placed", "c1", order(1, "1", 3, nil, 0), 0, lane.KindForward,
			"", `{"order_id":1,"seq":0,"email":"ada@example.com","name":"Ada Lovelace","tier":"gold; founder","customer_since":"2020-01-02T03:04:05Z","total":3,"discount_percent":0}`, "order:1"},
		{"optional lookup row missing", "order_placed", "c2", order(2, 2, 3, "NOPE", 0), 0, lane.KindForward,
			"", `{"order_id":2,"seq":0,"email":"grace@example.com","name":"Grace Hopper","tier":"silver","customer_since":"2021-06-07T08:09:10Z","total":3,"discount_percent":0}`, "order:2"},
		{"optional lookup key null", "order_placed", "c3", order(3, 3, 3, json.RawMessage("null"), 0), 0, lane.KindForward,
			"", `{"order_id":3,"seq":0,"email":"alan@example.com","name":"Alan Turing","tier":null,"customer_since":null,"total":3,"discount_percent":0}`, "order:3"},
		{"row missing within grace", "order_placed", "c4", order(4, 42, 3, nil, 0), 0, lane.KindRetry, "", "", ""},
		{"row missing after grace", "order_placed", "c5", order(5, 42, 3, nil, 0), 2 * time.Minute, lane.KindPark,
			"lookup missing: customers/42", "", ""},
		{"float key normalised", "order_placed", "c6", order(6, 43.0, 3, nil, 0), 2 * time.Minute, lane.KindPark,
			"lookup missing: customers/43", "", ""},
		{"required key null", "review", "r1", map[string]any{"customer_id": nil, "text": "t"}, 0, lane.KindPark,
			"lookup key missing: customer", "", ""},
		{"key of the wrong kind", "review", "r2", map[string]any{"customer_id": []int{1}, "text": "t"}, 0, lane.KindPark,
			"lookup key invalid: customer", "", ""},
		{"review forwarded", "review", "r3", map[string]any{"customer_id": 5, "text": "great"}, 0, lane.KindForward,
			"", `{"text":"great","by":"Barbara Liskov"}`, "r3"},
		{"id_key from data", "payment", "p1", map[string]any{"amount": "2", "ref": "pay-9"}, 0, lane.KindForward,
			"", `{"amount":2,"currency":"EUR"}`, "pay-9"},
		{"id_key null", "payment", "p2", map[string]any{"amount": "2"}, 0, lane.KindPark,
			"mapping error: crm.id_key: gave null", "", ""},
		{"id_key not a key", "payment", "p3", map[string]any{"amount": "2", "ref": "a\nb"}, 0, lane.KindPark,
			"mapping error: crm.id_key: topology: invalid key: contains a control character", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, body := h.event(c.typ, c.key, c.data)
			tok := topology.KeyToken(c.key)
			p := h.names.PartitionOf(c.key)
			stored := time.Now().Add(-time.Second)
			m := &lane.Msg{Subject: "x", Data: body, Partition: p, Type: c.typ, KeyToken: tok,
				Stored: stored, FirstSeen: time.Now().Add(-c.age)}
			o := handle(context.Background(), m)
			require.Equal(t, c.kind, o.Kind, "reason %q err %v", o.Reason, o.Err)
			switch c.kind {
			case lane.KindPark:
				require.Equal(t, c.reason, o.Reason)
			case lane.KindRetry:
				require.ErrorIs(t, o.Err, enricher.ErrRowMissing)
				require.Positive(t, o.Delay)
				require.LessOrEqual(t, o.Delay, cfg.RetryMax)
			case lane.KindForward:
				require.Len(t, o.Out, 1)
				out := o.Out[0]
				require.Equal(t, h.names.DispatchSubject(p, c.typ, tok), out.Subject)
				require.Equal(t, id, out.Header.Get("Nats-Msg-Id"))
				var r crmreq.Request
				require.NoError(t, json.Unmarshal(out.Data, &r))
				require.JSONEq(t, c.body, string(r.Body))
				require.Equal(t, c.idKey, r.IDKey)
				require.Equal(t, c.key, r.Key)
				require.True(t, stored.Equal(r.AcceptedAt))
			}
		})
	}
}

// TestRetryBackoffGrows checks the delay of a held lane doubles from
// retry_min up to retry_max and never passes the end of the grace by much.
func TestRetryBackoffGrows(t *testing.T) {
	db, dbc := openSQLite(t, "")
	cfg := enricher.Config{DB: dbc, RetryMin: 100 * time.Millisecond, RetryMax: 800 * time.Millisecond, LookupGrace: time.Hour}
	h := newHarness(t, 1, cfg, db, loadCatalog(t, nil))
	_, body := h.event("order_placed", "k", order(1, 42, 1, nil, 0))
	msg := func(failures int, seen time.Time) *lane.Msg {
		return &lane.Msg{Data: body, Type: "order_placed", KeyToken: "k", Failures: failures, FirstSeen: seen}
	}
	var prev time.Duration
	for f, lo := range []time.Duration{100, 200, 400, 800, 800, 800} {
		o := h.svc.Handler()(context.Background(), msg(f, time.Now()))
		require.Equal(t, lane.KindRetry, o.Kind)
		require.GreaterOrEqual(t, o.Delay, min(lo*time.Millisecond, cfg.RetryMax), "failures=%d", f)
		require.LessOrEqual(t, o.Delay, min(lo*time.Millisecond*5/4, cfg.RetryMax), "failures=%d", f)
		require.GreaterOrEqual(t, o.Delay, prev*9/10)
		prev = o.Delay
	}
	o := h.svc.Handler()(context.Background(), msg(10, time.Now().Add(-time.Hour+50*time.Millisecond)))
	require.Equal(t, lane.KindRetry, o.Kind)
	require.LessOrEqual(t, o.Delay, 60*time.Millisecond, "the last wait stops at the end of the grace")
}

// fakeOutlet records what an inline outlet is handed and answers with o.
type fakeOutlet struct {
	o   lane.Outcome
	got []crmreq.Request
}

func (f *fakeOutlet) Open(context.Context) error { return nil }
func (f *fakeOutlet) Close()                     {}
func (f *fakeOutlet) Lane(*lane.Config)          {}
func (f *fakeOutlet) BeforeAck() func(lane.Observation) func(context.Context) error {
	return nil
}
func (f *fakeOutlet) Deliver(_ context.Context, _ *lane.Msg, r crmreq.Request) lane.Outcome {
	f.got = append(f.got, r)
	return f.o
}

// TestInlineOutletGetsTheMappedRequest: with an outlet (dispatcher.inline)
// the handler hands it the request it mapped and returns the outlet's
// Outcome, forwarding nothing; a mapping problem never reaches it.
func TestInlineOutletGetsTheMappedRequest(t *testing.T) {
	db, dbc := openSQLite(t, "")
	h := newHarness(t, 2, fastConfig(dbc), db, loadCatalog(t, nil))
	for _, want := range []lane.Outcome{lane.Done(), lane.Retry(time.Second, errors.New("503")).Transient(), lane.Park("crm rejected: 422", nil, nil)} {
		out := &fakeOutlet{o: want}
		svc, err := enricher.New(fastConfig(dbc), enricher.Deps{NC: h.nc, JS: h.js, Names: h.names,
			Catalog: loadCatalog(t, nil), DB: db, Outlet: out})
		require.NoError(t, err)
		_, body := h.event("review", "r3", map[string]any{"customer_id": 5, "text": "great"})
		m := &lane.Msg{Subject: "x", Data: body, Partition: h.names.PartitionOf("r3"), Type: "review", KeyToken: "r3", Stored: time.Now()}
		o := svc.Handler()(context.Background(), m)
		require.Equal(t, want.Kind, o.Kind)
		require.Equal(t, want.Reason, o.Reason)
		require.Empty(t, o.Out, "inline: nothing is forwarded")
		require.Len(t, out.got, 1)
		require.JSONEq(t, `{"text":"great","by":"Barbara Liskov"}`, string(out.got[0].Body))
		require.Equal(t, "r3", out.got[0].Key)

		_, bad := h.event("review", "r1", map[string]any{"customer_id": nil, "text": "t"})
		o = svc.Handler()(context.Background(), &lane.Msg{Subject: "x", Data: bad, Type: "review", KeyToken: "r1", Stored: time.Now()})
		require.Equal(t, lane.KindPark, o.Kind)
		require.Len(t, out.got, 1, "a mapping problem is parked by the enricher, not sent")
	}
}
