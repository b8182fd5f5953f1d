package watchdog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Service is what a Supervisor runs (every Sluice service has this shape).
type Service interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Crasher is implemented by a Service that can fail after Start: Done
// delivers (or is closed) when the service stopped on its own, with the
// reason. A Service without it is only restarted through Restart.
type Crasher interface {
	Done() <-chan error
}

// SupervisorConfig configures a Supervisor.
type SupervisorConfig struct {
	// Name names the service in logs and in Supervisors (use its micro
	// service name, e.g. "sluice-dispatcher", so the watchdog's
	// service_silent condition can restart it).
	Name string
	// New builds a fresh instance for every (re)start. Required.
	New func() (Service, error)
	// RestartDelay is the wait before a crashed service is started again,
	// and between failed starts. Default 10s (watchdog.restart_delay).
	RestartDelay time.Duration
	// StopTimeout bounds stopping a crashed instance. Default 30s.
	StopTimeout time.Duration
	// Logger receives every crash and restart.
	Logger zerolog.Logger
}

// Supervisor runs one service in --target all mode and restarts it after
// RestartDelay when it crashes (Done fires) or when its restart fails. It
// is itself a Service.
type Supervisor struct {
	cfg SupervisorConfig
	log zerolog.Logger

	mu      sync.Mutex
	cur     Service
	running bool
	quit    chan struct{}
	kick    chan struct{}
	done    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc

	starts, restarts, crashes atomic.Uint64
}

// NewSupervisor validates cfg and returns a stopped Supervisor.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	if cfg.Name == "" || cfg.New == nil {
		return nil, errors.New("watchdog: SupervisorConfig.Name and .New are required")
	}
	if cfg.RestartDelay <= 0 {
		cfg.RestartDelay = DefaultRestartDelay
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	return &Supervisor{cfg: cfg, log: cfg.Logger.With().Str("supervised", cfg.Name).Logger()}, nil
}

// Start builds and starts the first instance and returns its error, so a
// configuration mistake fails the command at once; later crashes are
// restarted.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return ErrAlreadyStarted
	}
	inst, err := s.startOne(ctx)
	if err != nil {
		return err
	}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.cur, s.running = inst, true
	s.quit, s.kick, s.done = make(chan struct{}), make(chan struct{}, 1), make(chan struct{})
	go s.loop(inst, s.quit, s.kick, s.done)
	return nil
}

func (s *Supervisor) startOne(ctx context.Context) (inst Service, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: start panicked: %v", s.cfg.Name, r)
		}
	}()
	inst, err = s.cfg.New()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.cfg.Name, err)
	}
	if err := inst.Start(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", s.cfg.Name, err)
	}
	s.starts.Add(1)
	return inst, nil
}

func (s *Supervisor) loop(inst Service, quit, kick, done chan struct{}) {
	defer close(done)
	for {
		var crashed <-chan error
		if c, ok := inst.(Crasher); ok {
			crashed = c.Done()
		}
		delay := s.cfg.RestartDelay
		select {
		case <-quit:
			return
		case err := <-crashed:
			s.crashes.Add(1)
			s.log.Error().Err(err).Dur("restart_in", delay).Msg("service crashed; restarting after the delay")
		case <-kick:
			delay = 0
			s.log.Warn().Msg("restart requested")
		}
		s.stopInstance(inst)
		s.setCur(nil)
		for {
			if delay > 0 {
				select {
				case <-quit:
					return
				case <-time.After(delay):
				}
			}
			next, err := s.startOne(s.ctx)
			if err == nil {
				inst = next
				s.setCur(inst)
				break
			}
			delay = s.cfg.RestartDelay
			s.log.Error().Err(err).Dur("retry_in", delay).Msg("restart failed")
		}
		s.restarts.Add(1)
		s.log.Warn().Uint64("restarts", s.restarts.Load()).Msg("service restarted")
	}
}

func (s *Supervisor) setCur(inst Service) {
	s.mu.Lock()
	s.cur = inst
	s.mu.Unlock()
}

func (s *Supervisor) stopInstance(inst Service) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StopTimeout)
	defer cancel()
	if err := inst.Stop(ctx); err != nil {
		s.log.Debug().Err(err).Msg("stopping the old instance")
	}
}

// Restart stops the running instance and starts a new one without the
// delay (the watchdog calls it for a silent service). It returns at once.
func (s *Supervisor) Restart(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return ErrNotStarted
	}
	select {
	case s.kick <- struct{}{}:
	default: // a restart is already pending
	}
	return nil
}

// Stop ends supervision and stops the running instance.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return ErrNotStarted
	}
	s.running = false
	quit, done, cancel := s.quit, s.done, s.cancel
	s.mu.Unlock()
	close(quit)
	cancel() // a start in progress gives up
	<-done
	s.mu.Lock()
	inst := s.cur
	s.cur = nil
	s.mu.Unlock()
	if inst == nil {
		return nil
	}
	return inst.Stop(ctx)
}

// Restarts counts restarts (after crashes or Restart calls).
func (s *Supervisor) Restarts() uint64 { return s.restarts.Load() }

// Crashes counts crashes seen.
func (s *Supervisor) Crashes() uint64 { return s.crashes.Load() }

// Supervisors maps service names to their supervisors.
type Supervisors map[string]*Supervisor

// RestartService restarts the named service; it fits Deps.RestartService.
func (ss Supervisors) RestartService(ctx context.Context, name string) error {
	s, ok := ss[name]
	if !ok {
		return fmt.Errorf("watchdog: service %q is not supervised here", name)
	}
	return s.Restart(ctx)
}
