package dispatcher_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/ledger"
)

// dealCreate is a create of deal:1 with a crm.find and a conflict id.
func dealCreate(seq int) crmreq.Request {
	r := request("deal:1", seq)
	r.Type, r.Mode, r.Object, r.Path, r.UpdatePath = "deal", "create", "deals", "/deals", "/deals/{crm_id}"
	r.Body = json.RawMessage(`{"external_id":"deal:1","amount":10}`)
	r.Find = &crmreq.Find{Method: "GET", Path: "/deals?external_id=deal%3A1", IDFrom: ".data[0].id // empty"}
	r.ConflictIDFrom = ".existing_id"
	return r
}

// startLedger runs a dispatcher with the delivery ledger on.
func startLedger(t *testing.T, e *env, cfg dispatcher.Config) *dispatcher.Service {
	ctx := context.Background()
	require.NoError(t, ledger.Ensure(ctx, e.js, e.names, ledger.Config{Enabled: true}))
	w, err := ledger.NewWriter(e.nc, e.names, ledger.WriterConfig{Logger: zerolog.Nop()})
	require.NoError(t, err)
	svc, err := dispatcher.New(cfg, dispatcher.Deps{NC: e.nc, JS: e.js, Names: e.names, Logger: zerolog.Nop(), Ledger: w})
	require.NoError(t, err)
	require.NoError(t, svc.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Stop(ctx)
	})
	return svc
}

func methods(calls []call) string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Method+" "+c.URI)
	}
	return strings.Join(out, ", ")
}

func TestUncertainCreateIsFoundAdoptedAndTraced(t *testing.T) {
	tests := []struct {
		name   string
		answer func(c call, n int) reply
		calls  string
		crmID  string
	}{
		{"committed, answer lost: found and updated", func(c call, n int) reply {
			switch c.Method {
			case "POST": // stored, then the CRM failed to answer
				return reply{Status: 503, Header: map[string]string{"X-Crm-Error": "database timeout"}, Body: `{"error":"busy"}`}
			case "GET":
				return reply{Status: 200, Body: `{"data":[{"id":"d-1"}]}`}
			}
			return reply{Status: 200, Body: `{"id":"d-1"}`}
		}, "POST /deals, GET /deals?external_id=deal%3A1, PATCH /deals/d-1", "d-1"},
		{"not committed: created again", func(c call, n int) reply {
			switch {
			case c.Method == "POST" && n == 0:
				return reply{Status: 503, Header: map[string]string{"X-Crm-Error": "database timeout"}}
			case c.Method == "GET":
				return reply{Status: 200, Body: `{"data":[]}`}
			}
			return reply{Status: 201, Body: `{"id":"d-2"}`}
		}, "POST /deals, GET /deals?external_id=deal%3A1, POST /deals", "d-2"},
		{"duplicate check names it: adopted without a lookup", func(c call, n int) reply {
			if c.Method == "POST" {
				return reply{Status: 409, Header: map[string]string{"X-Crm-Error": "duplicate"}, Body: `{"existing_id":"d-7"}`}
			}
			return reply{Status: 200, Body: `{"id":"d-7"}`}
		}, "POST /deals, PATCH /deals/d-7", "d-7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			crm := newFakeCRM(t, tc.answer)
			cfg := fast(crm.srv.URL)
			cfg.CRM.RecordHeaders = []string{"x-crm-error"}
			svc := startLedger(t, e, cfg)
			r := dealCreate(1)
			e.publish(t, r)
			require.Eventually(t, func() bool { return e.dispatchLeft(t) == 0 }, 10*time.Second, 10*time.Millisecond)
			require.Equal(t, tc.calls, methods(crm.Calls()))
			m, err := dispatcher.OpenIDMap(context.Background(), e.js, e.names)
			require.NoError(t, err)
			got, found, err := m.Get(context.Background(), "deals", "deal:1")
			require.NoError(t, err)
			require.True(t, found)
			require.Equal(t, tc.crmID, got.CRMID)
			require.NoError(t, svc.Stop(context.Background()))

			tr, err := ledger.TraceEvent(context.Background(), e.js, e.names, r.EventID, ledger.TraceOptions{Key: r.Key})
			require.NoError(t, err)
			var attempts []string
			for _, s := range tr.Steps {
				if s.Step == string(ledger.StepAttempt) {
					attempts = append(attempts, s.Detail)
				}
			}
			require.NotEmpty(t, attempts, "every attempt is in the trace")
			require.Contains(t, attempts[0], "UNCERTAIN create POST /deals")
			require.Contains(t, attempts[0], "X-Crm-Error: ", "the CRM's error header is recorded")
		})
	}
}
