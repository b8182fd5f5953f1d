package dispatcher_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
)

func TestStatusPolicy(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 3000) // 6000 bytes
	cases := []struct {
		name   string
		policy map[string]string
		status int
		body   string
		park   bool
		// wantBody is the Sluice-Crm-Response of a parked event.
		wantBody string
	}{
		{name: "default parks", status: 422, body: `{"error":"bad"}`, park: true, wantBody: `{"error":"bad"}`},
		{name: "hold by policy", policy: map[string]string{"4xx": "hold"}, status: 422, body: `{"error":"bad"}`},
		{name: "exact code parks", policy: map[string]string{"422": "park"}, status: 422,
			body: `{"error":"email invalid"}`, park: true, wantBody: `{"error":"email invalid"}`},
		{name: "4xx parks, response truncated", policy: map[string]string{"4xx": "park"}, status: 404,
			body: long, park: true, wantBody: long[:2048]},
		{name: "exact hold wins over 4xx park", policy: map[string]string{"4xx": "park", "404": "hold"}, status: 404},
		{name: "429 is always retried", policy: map[string]string{"4xx": "park"}, status: 429},
		{name: "5xx is always retried", policy: map[string]string{"4xx": "park"}, status: 500},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 1)
			// Event a#0 is rejected for its first 4 tries; b#0 (another key,
			// same partition) is accepted at once.
			crm := newFakeCRM(t, func(c call, n int) reply {
				if c.Header.Get("X-Sluice-Key") == "a" && n < 4 {
					return reply{Status: tc.status, Body: tc.body}
				}
				return reply{Status: 200}
			})
			cfg := fast(crm.srv.URL)
			cfg.StatusPolicy = tc.policy
			svc := e.start(t, cfg, zerolog.Nop())
			e.publish(t, request("a", 0))
			e.publish(t, request("b", 0))
			if tc.park {
				require.Eventually(t, func() bool { return svc.Delivered() == 1 }, 10*time.Second, 10*time.Millisecond)
				require.Equal(t, []string{"a#0", "b#0"}, ids(crm.Calls()))
				pm := e.parked(t, "evt", "a")
				require.Equal(t, "crm rejected: "+itoa(tc.status), pm.Header.Get(lane.HeaderParkReason))
				require.Equal(t, itoa(tc.status), pm.Header.Get(dispatcher.HeaderCRMStatus))
				require.Equal(t, tc.wantBody, pm.Header.Get(dispatcher.HeaderCRMResponse))
				r, err := dispatcher.DecodeRequest(pm.Data)
				require.NoError(t, err)
				require.Equal(t, "a#0", r.EventID)
				require.Equal(t, uint64(1), svc.Stats().Lanes[0].Parked)
				return
			}
			// Held: b#0 waits behind a#0 through retries and a pause.
			require.Eventually(t, func() bool { return svc.Delivered() == 2 }, 10*time.Second, 10*time.Millisecond)
			require.Equal(t, []string{"a#0", "a#0", "a#0", "a#0", "a#0", "b#0"}, ids(crm.Calls()))
			st := svc.Stats()
			require.Equal(t, uint64(1), st.Lanes[0].Pauses)
			require.Zero(t, st.Lanes[0].Parked)
			require.Equal(t, uint64(4), st.CRMStatuses[itoa(tc.status)])
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// contact builds a request of type contact for the CRM object "contacts".
func contact(id, key, idKey, mode, body string) crmreq.Request {
	return crmreq.Request{
		EventID: id, Type: "contact", Key: key, IDKey: idKey, Object: "contacts",
		OccurredAt: time.Now(), AcceptedAt: time.Now(),
		Mode: mode, Method: "POST", Path: "/contacts",
		UpdateMethod: "PATCH", UpdatePath: "/contacts/{crm_id}?notify=false",
		IDFrom: ".data.id // .id",
		Body:   json.RawMessage(body),
	}
}

func TestCreateStoresIDAndUpdatesUseIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	crm := newFakeCRM(t, func(c call, n int) reply {
		switch c.Header.Get("Idempotency-Key") {
		case "e1":
			return reply{Status: 201, Body: `{"data":{"id":"crm 42/x"}}`}
		case "e4":
			return reply{Status: 201, Body: `{"id":12345678901234567890}`}
		}
		return reply{Status: 200}
	})
	svc := e.start(t, fast(crm.srv.URL), zerolog.Nop())
	for _, r := range []crmreq.Request{
		contact("e1", "c1", "", "create", `{"name":"Ada"}`),
		contact("e2", "c1", "", "update", `{"name":"Ada L."}`),
		contact("e3", "c1", "", "upsert", `{"name":"Ada Lovelace"}`),
		// Ordered by customer, identified by lead: the id key is not the key.
		contact("e4", "cust:1", "lead:9", "upsert", `{"name":"Bob"}`),
		contact("e5", "cust:1", "lead:9", "update", `{"name":"Bob B."}`),
	} {
		e.publish(t, r)
	}
	require.Eventually(t, func() bool { return svc.Delivered() == 5 }, 10*time.Second, 10*time.Millisecond)
	var got []string
	for _, c := range crm.Calls() {
		got = append(got, c.Header.Get("Idempotency-Key")+" "+c.Method+" "+c.URI)
	}
	require.Equal(t, []string{
		"e1 POST /contacts",
		"e2 PATCH /contacts/crm%2042%2Fx?notify=false",
		"e3 PATCH /contacts/crm%2042%2Fx?notify=false",
		"e4 POST /contacts",
		"e5 PATCH /contacts/12345678901234567890?notify=false",
	}, got)
	kv, err := e.js.KeyValue(context.Background(), e.names.CRMIDBucket())
	require.NoError(t, err)
	for idKey, want := range map[string]string{"c1": "crm 42/x", "lead:9": "12345678901234567890"} {
		ent, err := kv.Get(context.Background(), "contacts."+base64.RawURLEncoding.EncodeToString([]byte(idKey)))
		require.NoError(t, err)
		require.Equal(t, want, string(ent.Value()))
	}
}

func TestParksWhatCannotBeSent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	crm := newFakeCRM(t, func(c call, n int) reply {
		if c.Header.Get("Idempotency-Key") == "e3" {
			return reply{Status: 201, Body: `{"result":"created"}`}
		}
		return reply{Status: 200}
	})
	svc := e.start(t, fast(crm.srv.URL), zerolog.Nop())
	e.publish(t, contact("e1", "c9", "", "update", `{}`))
	e.publishRaw(t, "contact", "junk", "e2", []byte(`{"event_id":`))
	e.publish(t, contact("e3", "c8", "", "create", `{}`))
	e.publish(t, contact("e4", "c7", "", "send", `{}`))
	require.Eventually(t, func() bool { return svc.Delivered() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"e3", "e4"}, ids(crm.Calls()), "the update without id is never sent")
	require.Eventually(t, func() bool { return svc.Stats().Lanes[0].Parked == 3 }, 5*time.Second, 10*time.Millisecond)

	pm := e.parked(t, "contact", "c9")
	require.Equal(t, "no CRM id for contacts c9", pm.Header.Get(lane.HeaderParkReason))
	require.Equal(t, "dispatcher", pm.Header.Get(lane.HeaderParkStage))
	pm = e.parked(t, "contact", "junk")
	require.Equal(t, "undecodable request", pm.Header.Get(lane.HeaderParkReason))
	require.Equal(t, `{"event_id":`, string(pm.Data))
	pm = e.parked(t, "contact", "c8")
	require.Equal(t, "crm id not in create response", pm.Header.Get(lane.HeaderParkReason))
	require.Equal(t, "201", pm.Header.Get(dispatcher.HeaderCRMStatus))
	require.Equal(t, `{"result":"created"}`, pm.Header.Get(dispatcher.HeaderCRMResponse))
}

func TestSecretHeadersSentNeverLogged(t *testing.T) {
	t.Parallel()
	const secret, apiKey = "Bearer s3cr3t-t0ken", "k3y-v4lue"
	e := newEnv(t, 1)
	crm := newFakeCRM(t, func(c call, n int) reply {
		switch {
		case c.Header.Get("X-Sluice-Key") == "a" && n < 2:
			return reply{Status: 503, Body: c.Header.Get("Authorization")}
		case c.Header.Get("X-Sluice-Key") == "b":
			return reply{Status: 422, Body: `{"error":"nope"}`}
		}
		return reply{Status: 200}
	})
	logs := &meshtest.LogBuffer{}
	cfg := fast(crm.srv.URL)
	cfg.Retry.Tries = 2
	cfg.CRM.Headers = map[string]string{"Authorization": secret, "x-api-key": apiKey, "User-Agent": "acme-sync"}
	cfg.StatusPolicy = map[string]string{"422": "park"}
	svc := e.start(t, cfg, zerolog.New(logs).Level(zerolog.DebugLevel))
	e.publish(t, request("a", 0))
	e.publish(t, request("b", 0))
	require.Eventually(t, func() bool { return svc.Delivered() == 1 && svc.Stats().Lanes[0].Parked == 1 },
		10*time.Second, 10*time.Millisecond)
	for _, c := range crm.Calls() {
		require.Equal(t, secret, c.Header.Get("Authorization"))
		require.Equal(t, apiKey, c.Header.Get("X-Api-Key"))
		require.Equal(t, "acme-sync", c.Header.Get("User-Agent"))
	}
	out := logs.String()
	require.Contains(t, out, "crm request failed; retrying")
	require.Contains(t, out, "the lane pauses the partition or steps the key aside")
	require.Contains(t, out, "event parked")
	require.NotContains(t, out, "s3cr3t")
	require.NotContains(t, out, apiKey)

	// Config errors name the header, never its value.
	cfg.CRM.Headers = map[string]string{"Authorization": secret + "\n"}
	_, err := dispatcher.New(cfg, dispatcher.Deps{NC: e.nc, JS: e.js, Names: e.names})
	require.ErrorContains(t, err, "dispatcher.crm.headers.Authorization")
	require.NotContains(t, err.Error(), "s3cr3t")
}
