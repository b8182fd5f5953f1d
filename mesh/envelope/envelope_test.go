package envelope_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/envelope"
)

func TestDecodeAndCheck(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		field    string // "" = valid
	}{
		{"valid", `{"id":"e1","type":"t","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, ""},
		{"valid: same names in different objects", `{"id":"e1","type":"t","key":"k","source":"` + strings.Repeat("s", envelope.MaxSourceLen) + `","occurred_at":"2026-01-02T03:04:05Z","data":{"id":1,"a":{"id":2},"l":[{"id":3},{"id":4}]}}`, ""},
		{"not json", `{"id":`, ""},
		{"unknown field", `{"id":"e1","typ":"t"}`, "typ"},
		{"id wrong type", `{"id":5}`, "id"},
		{"bad time", `{"occurred_at":"yesterday"}`, "occurred_at"},
		{"trailing", `{"id":"e1"} {}`, ""},
		{"missing id", `{"type":"t","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "id"},
		{"missing type", `{"id":"e","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "type"},
		{"missing key", `{"id":"e","type":"t","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "key"},
		{"missing time", `{"id":"e","type":"t","key":"k","data":{}}`, "occurred_at"},
		{"data not object", `{"id":"e","type":"t","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":[1]}`, "data"},
		{"space in id", `{"id":"e 1","type":"t","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "id"},
		{"dot in type", `{"id":"e","type":"a.b","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "type"},
		// issue 11: a name twice in one object is refused, naming it.
		{"duplicate top-level name", `{"id":"e","type":"t","key":"k","key":"j","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "key"},
		{"duplicate name in data", `{"id":"e","type":"t","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":{"a":{"email":"x","email":"y"}}}`, "data.a.email"},
		{"duplicate name in an array", `{"id":"e","type":"t","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":{"l":[1,{"x":1,"x":2}]}}`, "data.l[1].x"},
		{"C1 control in key", `{"id":"e","type":"t","key":"a\u0085b","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "key"},
		{"source too long", `{"id":"e","type":"t","key":"k","source":"` + strings.Repeat("s", envelope.MaxSourceLen+1) + `","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "source"},
		{"control in source", `{"id":"e","type":"t","key":"k","source":"a\nb","occurred_at":"2026-01-02T03:04:05Z","data":{}}`, "source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := envelope.Decode([]byte(tc.in))
			if err == nil {
				err = e.Check()
			}
			if strings.HasPrefix(tc.name, "valid") {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, envelope.ErrInvalid)
			var inv *envelope.Invalid
			require.True(t, errors.As(err, &inv))
			if tc.field != "" {
				require.Equal(t, tc.field, inv.Fields[0].Field, "%v", inv.Fields)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.json")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add([]byte(`{"id":"e","type":"t","key":"k","occurred_at":"2026-01-02T03:04:05Z","data":{"a":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := envelope.Decode(b)
		if err != nil {
			require.ErrorIs(t, err, envelope.ErrInvalid)
			return
		}
		if err := e.Check(); err != nil {
			require.ErrorIs(t, err, envelope.ErrInvalid)
			return
		}
		// A valid envelope survives a round trip unchanged.
		out, err := e.Marshal()
		require.NoError(t, err)
		e2, err := envelope.Decode(out)
		require.NoError(t, err)
		require.NoError(t, e2.Check())
		require.Equal(t, e.ID, e2.ID)
		require.Equal(t, e.Key, e2.Key)
	})
}
