package app

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/watchdog"
)

// instance is a supervised service: a sluice service that reports crashes
// (watchdog.Crasher).
type instance interface {
	runnable
	Done() <-chan error
}

// current holds the running instance of a supervised service, for the
// parts of a run that talk to it after a restart (control requests).
type current[S instance] struct {
	mu  sync.Mutex
	svc S
	nc  *nats.Conn
}

func (c *current[S]) get() S {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.svc
}

// supervise builds a Supervisor for a service whose every instance gets a
// fresh NATS connection from connect and is built by build. A crashed
// instance (Done fired: its connection closed, its HTTP server died) is
// stopped, its connection closed, and a new one is started after delay.
func supervise[S instance](name string, delay time.Duration, log zerolog.Logger,
	connect func() (*nats.Conn, jetstream.JetStream, error),
	build func(*nats.Conn, jetstream.JetStream) (S, error),
) (*watchdog.Supervisor, *current[S], error) {
	cur := &current[S]{}
	sup, err := watchdog.NewSupervisor(watchdog.SupervisorConfig{
		Name:         name,
		RestartDelay: delay,
		Logger:       log,
		New: func() (watchdog.Service, error) {
			cur.mu.Lock()
			prev := cur.nc
			cur.nc = nil
			cur.mu.Unlock()
			if prev != nil {
				prev.Close() // the supervisor has stopped its instance
			}
			nc, js, err := connect()
			if err != nil {
				return nil, err
			}
			s, err := build(nc, js)
			if err != nil {
				nc.Close()
				return nil, err
			}
			cur.mu.Lock()
			cur.svc, cur.nc = s, nc
			cur.mu.Unlock()
			return s, nil
		},
	})
	return sup, cur, err
}
