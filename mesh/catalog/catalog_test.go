package catalog_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/envelope"
)

func testCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Compile(catalog.Config{Types: map[string]catalog.Type{
		"signup": {
			Schema: "signup.json",
			Key:    `"customer:" + (.data.customer_id|tostring)`,
			CRM:    catalog.Target{Object: "contacts", Mode: catalog.ModeUpsert, Path: "/c", UpdatePath: "/c/{crm_id}"},
		},
	}}, os.DirFS("testdata"))
	require.NoError(t, err)
	return c
}

func fields(err error) map[string]string {
	var inv *envelope.Invalid
	if !errors.As(err, &inv) {
		return nil
	}
	out := map[string]string{}
	for _, f := range inv.Fields {
		out[f.Field] = f.Reason
	}
	return out
}

func TestPrepare(t *testing.T) {
	c := testCatalog(t)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		env    envelope.Envelope
		key    string   // derived key when valid
		fields []string // fields named when invalid
	}{
		{"derives key", envelope.Envelope{ID: "e1", Type: "signup", OccurredAt: at,
			Data: []byte(`{"customer_id":7,"email":"a@example.com"}`)}, "customer:7", nil},
		{"explicit key wins", envelope.Envelope{ID: "e1", Type: "signup", Key: "k", OccurredAt: at,
			Data: []byte(`{"customer_id":7,"email":"a@example.com"}`)}, "k", nil},
		{"big ids keep their digits", envelope.Envelope{ID: "e1", Type: "signup", OccurredAt: at,
			Data: []byte(`{"customer_id":9007199254740993,"email":"a@example.com"}`)}, "customer:9007199254740993", nil},
		{"missing field, no key from null", envelope.Envelope{ID: "e1", Type: "signup", OccurredAt: at,
			Data: []byte(`{"email":"a@example.com"}`)}, "", []string{"data.customer_id"}},
		{"format asserted", envelope.Envelope{ID: "e1", Type: "signup", Key: "k", OccurredAt: at,
			Data: []byte(`{"customer_id":7,"email":"nope"}`)}, "", []string{"data.email"}},
		{"enum and unknown field", envelope.Envelope{ID: "e1", Type: "signup", Key: "k", OccurredAt: at,
			Data: []byte(`{"customer_id":7,"email":"a@example.com","city":"Goa","x":1}`)}, "", []string{"data.city", "data.x"}},
		{"wrong type", envelope.Envelope{ID: "e1", Type: "signup", Key: "k", OccurredAt: at,
			Data: []byte(`{"customer_id":"7","email":"a@example.com"}`)}, "", []string{"data.customer_id"}},
		{"unknown type", envelope.Envelope{ID: "e1", Type: "nope", Key: "k", OccurredAt: at,
			Data: []byte(`{}`)}, "", []string{"type"}},
		{"envelope and data problems together", envelope.Envelope{Type: "signup", Key: "k",
			Data: []byte(`{"customer_id":0,"email":"a@example.com"}`)}, "", []string{"id", "occurred_at", "data.customer_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.env
			err := c.Prepare(&e)
			if tc.fields == nil {
				require.NoError(t, err)
				require.Equal(t, tc.key, e.Key)
				return
			}
			require.ErrorIs(t, err, envelope.ErrInvalid)
			got := fields(err)
			for _, f := range tc.fields {
				require.Contains(t, got, f, "all fields: %v", got)
			}
			if tc.env.Key == "" && tc.name != "unknown type" {
				require.NotContains(t, got, "key", "a derived key is not reported missing when the data is invalid")
			}
			if tc.name == "unknown type" {
				require.True(t, catalog.IsUnknownType(err))
			}
		})
	}
}

func TestCompileErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  catalog.Type
		key  string
	}{
		{"missing schema", catalog.Type{Schema: "nope.json", CRM: catalog.Target{Path: "/x"}}, "catalog.types.t.schema"},
		{"bad jq", catalog.Type{Schema: "signup.json", Key: "..[", CRM: catalog.Target{Path: "/x"}}, "catalog.types.t.key"},
		{"bad identifier", catalog.Type{Schema: "signup.json", CRM: catalog.Target{Path: "/x"},
			Lookups: []catalog.Lookup{{Name: "c", Table: "customers;drop", KeyColumn: "id", Columns: []string{"a"}, From: ".data.x"}}},
			"catalog.types.t.lookups[0].table"},
		{"bad mode", catalog.Type{Schema: "signup.json", CRM: catalog.Target{Mode: "merge", Path: "/x"}}, "catalog.types.t.crm.mode"},
		{"upsert without update path", catalog.Type{Schema: "signup.json", CRM: catalog.Target{Mode: "upsert", Object: "o", Path: "/x"}},
			"catalog.types.t.crm.update_path"},
		{"bad body jq", catalog.Type{Schema: "signup.json", Body: "{", CRM: catalog.Target{Path: "/x"}}, "catalog.types.t.body"},
		{"bad id_from jq", catalog.Type{Schema: "signup.json", CRM: catalog.Target{Path: "/x", IDFrom: ".id |"}}, "catalog.types.t.crm.id_from"},
		{"bad method", catalog.Type{Schema: "signup.json", CRM: catalog.Target{Method: "post", Path: "/x"}}, "catalog.types.t.crm.method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := catalog.Compile(catalog.Config{Types: map[string]catalog.Type{"t": tc.typ}}, os.DirFS("testdata"))
			require.ErrorContains(t, err, tc.key)
		})
	}
	_, err := catalog.Compile(catalog.Config{}, os.DirFS("testdata"))
	require.ErrorContains(t, err, "catalog.types")
}

// TestSchemaErrorsNeverEchoTheValue: a reason names the field and the rule
// but never the value (it reaches replies, WARN logs, parked headers,
// `sluice trace` and the status page).
func TestSchemaErrorsNeverEchoTheValue(t *testing.T) {
	c, err := catalog.Compile(catalog.Config{Types: map[string]catalog.Type{
		"t": {Schema: "secrets.json", CRM: catalog.Target{Path: "/x"}},
	}}, os.DirFS("testdata"))
	require.NoError(t, err)
	e := envelope.Envelope{ID: "e1", Type: "t", Key: "k", OccurredAt: time.Now(), Data: []byte(
		`{"email":"priya at example.in","user_password":"hunter2-PLAIN","pwd":"hunter2-PLAIN","passcode":123456,` +
			`"db_pass":"hunter2-PLAIN","pin":31337.25}`)}
	err = c.Prepare(&e)
	require.ErrorIs(t, err, envelope.ErrInvalid)
	got := fields(err)
	require.Equal(t, map[string]string{
		"data.email":         "is not a valid email",
		"data.user_password": `does not match pattern "^[a-z]+$"`,
		"data.pwd":           "is not a valid ipv4",
		"data.passcode":      "must be a multiple of 7",
		"data.db_pass":       "maxLength: got 13, want 3",
		"data.pin":           "must be < 9.5",
	}, got)
	for _, leak := range []string{"priya", "hunter2", "123456", "31337"} {
		require.NotContains(t, err.Error(), leak)
	}
}

// A runaway key expression is cut off by the caller's context (and by
// KeyTimeout at most) and reported as a key problem.
func TestRunawayKeyExpressionIsCutOff(t *testing.T) {
	c, err := catalog.Compile(catalog.Config{Types: map[string]catalog.Type{
		"signup": {Schema: "signup.json", Key: `last(range(1e15)) | tostring`, CRM: catalog.Target{Path: "/c"}},
	}}, os.DirFS("testdata"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	e := envelope.Envelope{ID: "e1", Type: "signup", OccurredAt: time.Now(),
		Data: []byte(`{"customer_id":7,"email":"a@example.com"}`)}
	err = c.PrepareContext(ctx, &e)
	require.Contains(t, fields(err)["key"], "deadline exceeded")
	require.Empty(t, e.Key)
}
