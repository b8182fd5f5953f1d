package ledger

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedactorJSON(t *testing.T) {
	r := NewRedactor([]string{"Email", "phone"})
	for _, tc := range []struct{ name, in, want string }{
		{"configured fields at any depth, any case", `{"email":"a@b.c","x":{"PHONE":"1","list":[{"phone":2}]},"n":1.50}`,
			`{"email":"[redacted]","x":{"PHONE":"[redacted]","list":[{"phone":"[redacted]"}]},"n":1.50}`},
		{"secrets always", `{"api_key":"k","Authorization":"Bearer x","password":{"a":1}}`,
			`{"api_key":"[redacted]","Authorization":"[redacted]","password":"[redacted]"}`},
		{"nothing sensitive", `["a",{"b":null}]`, `["a",{"b":null}]`},
		{"not JSON is not shown", `email=a@b.c`, `"[not JSON, 11 bytes: not shown]"`},
		{"trailing data is not JSON", `{"a":1} {"email":"x"}`, `"[not JSON, 21 bytes: not shown]"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.JSONEq(t, tc.want, string(r.JSON([]byte(tc.in))))
		})
	}
	require.Nil(t, r.JSON([]byte("  ")))
}

// FuzzRedactorJSON: whatever a CRM answers, the redacted form is valid
// JSON and holds no value of a sensitive field.
func FuzzRedactorJSON(f *testing.F) {
	f.Add([]byte(`{"email":"secret-value","a":[1,{"email":"secret-value"}]}`))
	f.Add([]byte(`"secret-value"`))
	f.Add([]byte(`{"EMAIL":{"email":"secret-value"}}`))
	r := NewRedactor([]string{"email"})
	f.Fuzz(func(t *testing.T, doc []byte) {
		out := r.JSON(doc)
		if out == nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("not JSON: %q", out)
		}
		var got any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		checkRedacted(t, got, r)
	})
}

// checkRedacted fails when a sensitive key of v (a redacted document)
// holds anything but "[redacted]".
func checkRedacted(t *testing.T, v any, r *Redactor) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if r.Sensitive(k) && val != Redacted {
				t.Fatalf("%s holds %v", k, val)
			}
			checkRedacted(t, val, r)
		}
	case []any:
		for _, e := range x {
			checkRedacted(t, e, r)
		}
	}
}
