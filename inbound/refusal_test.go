package inbound_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Refusals are logged with source, remote address and reason, never the
// body or a secret, at most a burst a second, and all of them counted.
func TestRefusalsAreLoggedRateLimitedAndCounted(t *testing.T) {
	e := newEnv(t, sqliteDB)
	e.bareCRM(t)
	var logs lockedBuf
	s, _ := e.start(func(_ *inbound.Config, d *inbound.Deps) { d.Logger = zerolog.New(&logs) })
	const n = 40
	start := time.Now()
	for i := 0; i < n; i++ {
		code, _ := postBare(t, s, []byte(`[{"id":"42","email":"jane@example.com"}]`), "not-the-secret")
		require.Equal(t, 401, code)
	}
	require.Equal(t, uint64(n), s.Stats().Unauthorized)
	lines := strings.Count(logs.String(), `"webhook refused"`)
	require.GreaterOrEqual(t, lines, 1)
	if time.Since(start) < time.Second {
		require.LessOrEqual(t, lines, 10, "rate-limited to a burst of 10 a second")
	}
	out := logs.String()
	for _, want := range []string{`"source":"crm"`, `"remote":"127.0.0.1:`, `"reason":"signature or timestamp invalid"`} {
		require.Contains(t, out, want)
	}
	for _, never := range []string{"jane@example.com", "crm-secret", "not-the-secret", "hook-7:"} {
		require.NotContains(t, out, never)
	}
}
