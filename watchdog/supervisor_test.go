package watchdog_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/watchdog"
)

// fakeService crashes when told to.
type fakeService struct {
	done    chan error
	started atomic.Bool
	stopped atomic.Bool
	failing bool
}

func (f *fakeService) Start(context.Context) error {
	if f.failing {
		return errors.New("cannot start")
	}
	f.started.Store(true)
	return nil
}

func (f *fakeService) Stop(context.Context) error { f.stopped.Store(true); return nil }
func (f *fakeService) Done() <-chan error         { return f.done }

type fakeFactory struct {
	mu        sync.Mutex
	instances []*fakeService
	startedAt []time.Time
	failNext  int
}

func (ff *fakeFactory) new() (watchdog.Service, error) {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	f := &fakeService{done: make(chan error, 1), failing: ff.failNext > 0}
	if ff.failNext > 0 {
		ff.failNext--
	}
	ff.instances = append(ff.instances, f)
	ff.startedAt = append(ff.startedAt, time.Now())
	return f, nil
}

func (ff *fakeFactory) count() int {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return len(ff.instances)
}

func (ff *fakeFactory) get(i int) (*fakeService, time.Time) {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return ff.instances[i], ff.startedAt[i]
}

func TestSupervisorRestartsCrashedServiceAfterDelay(t *testing.T) {
	const delay = 150 * time.Millisecond
	ff := &fakeFactory{}
	s, err := watchdog.NewSupervisor(watchdog.SupervisorConfig{Name: "sluice-dispatcher", New: ff.new,
		RestartDelay: delay, Logger: zerolog.Nop()})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, s.Start(ctx))
	first, _ := ff.get(0)
	require.True(t, first.started.Load())

	ff.mu.Lock()
	ff.failNext = 1 // the first restart fails too: retried after another delay
	ff.mu.Unlock()
	crashed := time.Now()
	first.done <- errors.New("lane goroutine died")
	require.Eventually(t, func() bool {
		if ff.count() < 3 {
			return false
		}
		f, _ := ff.get(2)
		return f.started.Load()
	}, 5*time.Second, 10*time.Millisecond)
	_, at1 := ff.get(1)
	_, at2 := ff.get(2)
	require.GreaterOrEqual(t, at1.Sub(crashed), delay, "restarted before restart_delay")
	require.GreaterOrEqual(t, at2.Sub(at1), delay, "failed restart retried before restart_delay")
	require.True(t, first.stopped.Load(), "the crashed instance is stopped")
	require.Equal(t, uint64(1), s.Restarts())
	require.Equal(t, uint64(1), s.Crashes())

	// A restart asked for by the watchdog happens without the delay.
	set := watchdog.Supervisors{"sluice-dispatcher": s}
	require.NoError(t, set.RestartService(ctx, "sluice-dispatcher"))
	require.Error(t, set.RestartService(ctx, "sluice-nope"))
	require.Eventually(t, func() bool { return ff.count() == 4 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return s.Restarts() == 2 }, 5*time.Second, 5*time.Millisecond)

	require.NoError(t, s.Stop(ctx))
	last, _ := ff.get(3)
	require.True(t, last.stopped.Load())
	require.ErrorIs(t, s.Stop(ctx), watchdog.ErrNotStarted)
	require.ErrorIs(t, s.Restart(ctx), watchdog.ErrNotStarted)
}

func TestSupervisorFirstStartErrorIsReturned(t *testing.T) {
	ff := &fakeFactory{failNext: 1}
	s, err := watchdog.NewSupervisor(watchdog.SupervisorConfig{Name: "x", New: ff.new, Logger: zerolog.Nop()})
	require.NoError(t, err)
	require.ErrorContains(t, s.Start(context.Background()), "cannot start")
	require.ErrorIs(t, s.Stop(context.Background()), watchdog.ErrNotStarted)
	_, err = watchdog.NewSupervisor(watchdog.SupervisorConfig{Name: "x"})
	require.Error(t, err)
}
