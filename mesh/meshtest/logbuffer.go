package meshtest

import (
	"bytes"
	"sync"
)

// LogBuffer is a goroutine-safe sink for a test's log lines (give it to
// zerolog.New); String returns everything written so far. The zero value
// is ready.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
