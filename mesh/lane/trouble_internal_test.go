package lane

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// A bus outage fails every held key's replay each second: the holder warns
// once per troubleEvery with what it folded since, and says when it ends.
func TestHolderWarningsAreThrottledAndCounted(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	tr := trouble{log: zerolog.New(&buf).Level(zerolog.InfoLevel), now: func() time.Time { return now }}
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if l == "" {
				continue
			}
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &m))
			out = append(out, m)
		}
		buf.Reset()
		return out
	}
	err := errors.New("nats: JetStream system temporarily unavailable")
	fail := func(keys, rounds int, step time.Duration) {
		for r := range rounds {
			for k := range keys {
				tr.warn(fmt.Sprintf("enricher.k%d", k), err, "held key: read failed; trying again")
			}
			if r < rounds-1 {
				now = now.Add(step)
			}
		}
	}

	// 50 keys fail each second for 9 s: one warning.
	fail(50, 10, time.Second)
	got := lines()
	require.Len(t, got, 1)
	require.Equal(t, "warn", got[0]["level"])
	require.Equal(t, "enricher.k0", got[0]["held_key"])
	require.NotContains(t, got[0], "more_failures")

	// A second later the window has passed: one warning with the count.
	now = now.Add(time.Second)
	fail(50, 1, 0)
	got = lines()
	require.Len(t, got, 1)
	require.EqualValues(t, 499, got[0]["more_failures"], "50 x 10 failures, the first one warned")
	require.EqualValues(t, 50, got[0]["more_keys"])

	// The 49 failures since, then a replay works: they are reported over.
	tr.ok()
	got = lines()
	require.Len(t, got, 1)
	require.Equal(t, "info", got[0]["level"])
	require.EqualValues(t, 49, got[0]["failures"])
	tr.ok()
	require.Empty(t, lines(), "nothing to report twice")
}
