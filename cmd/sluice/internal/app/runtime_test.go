package app

import (
	"runtime/debug"
	"testing"

	"github.com/rs/zerolog"
)

func TestApplyRuntimeSetsGCAndMemoryLimit(t *testing.T) {
	prevGC := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(prevGC); debug.SetMemoryLimit(prevLimit) })

	applyRuntime(RuntimeConfig{GCPercent: 300, MemoryLimit: 1 << 30}, zerolog.Nop())
	if got := debug.SetGCPercent(100); got != 300 {
		t.Fatalf("gc percent = %d, want 300", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Fatalf("memory limit = %d, want %d", got, 1<<30)
	}
	applyRuntime(RuntimeConfig{}, zerolog.Nop()) // zero keeps what is set
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("gc percent changed by a zero config: %d", got)
	}
}
