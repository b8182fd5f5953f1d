package ingest_test

import (
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/ingest"
	"sluice.dev/mesh/meshtest"
)

// TestRejectionNamesTheFieldNotTheValue: a schema violation and unknown
// secret-like fields are answered (HTTP and NATS) and logged (debug, the
// most verbose) with the field and the rule, never the value.
func TestRejectionNamesTheFieldNotTheValue(t *testing.T) {
	logs := &meshtest.LogBuffer{}
	h := setupLog(t, ingest.Config{}, zerolog.New(logs).Level(zerolog.DebugLevel))
	const secret, email = "hunter2-PLAIN", "priya@example.in"
	body := `{"id":"s-1","type":"signup","occurred_at":"2026-01-01T00:00:00Z","data":{"user_id":7,` +
		`"email":"` + secret + ` ` + email + `","user_password":"` + secret + `","pwd":"` + secret +
		`","passcode":"` + secret + `","db_pass":"` + secret + `"}}`
	r := h.postJSON(body)
	require.Equal(t, 400, r.status, r.raw)
	fields := map[string]string{}
	for _, e := range r.body.Errors {
		fields[e.Field] = e.Reason
	}
	require.Equal(t, map[string]string{
		"data.email": `does not match pattern "^[^@\\s]+@[^@\\s]+$"`, "data.user_password": "unknown field",
		"data.pwd": "unknown field", "data.passcode": "unknown field", "data.db_pass": "unknown field",
	}, fields)
	msg, err := h.nc.Request(h.names.Config().Prefix+".ingest.validate", []byte(body), 5*time.Second)
	require.NoError(t, err)
	for _, out := range []string{r.raw, string(msg.Data), logs.String()} {
		require.NotContains(t, out, secret)
		require.NotContains(t, out, email)
	}
	require.Contains(t, logs.String(), `"field":"data.db_pass"`)
}
