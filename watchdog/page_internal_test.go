package watchdog

import (
	"strings"
	"testing"
)

func FuzzDecodeAction(f *testing.F) {
	for _, s := range []string{"", " ", `{}`, `{"reason":"crm fixed"}`, `{"for":"30m"}`, `{"reason":1}`,
		`{"x":1}`, `{} {}`, `[`, strings.Repeat("a", maxActionBody+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := decodeAction(strings.NewReader(s))
		if err != nil {
			return
		}
		if len(b.Reason) > 500 || strings.TrimSpace(b.Reason) != b.Reason {
			t.Fatalf("accepted reason %q", b.Reason)
		}
		if len(s) > maxActionBody {
			t.Fatalf("accepted a %d-byte body", len(s))
		}
	})
}
