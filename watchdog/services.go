package watchdog

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// pingSubject is the micro PING subject of a service name.
func pingSubject(name string) string { return "$SRV.PING." + name }

// checkServices PINGs every expected micro service (any instance may
// answer) and raises service_silent for one that has not answered for
// service_silent_after. With Deps.RestartService set it also asks for a
// restart, at most once per service_silent_after.
func (w *Watchdog) checkServices(ctx context.Context, now time.Time) {
	if len(w.cfg.Services) == 0 {
		return
	}
	timeout := min(time.Second, w.cfg.PollInterval)
	alive := make([]bool, len(w.cfg.Services))
	var wg sync.WaitGroup
	for i, name := range w.cfg.Services {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			_, err := w.nc.RequestWithContext(pctx, pingSubject(name), nil)
			alive[i] = err == nil
		})
	}
	wg.Wait()
	for i, name := range w.cfg.Services {
		key := CondServiceSilent + "/" + name
		w.mu.Lock()
		if alive[i] {
			w.svcSeen[name] = now
		} else if _, ok := w.svcSeen[name]; !ok {
			w.svcSeen[name] = now // count silence from the watchdog's start
		}
		silent := now.Sub(w.svcSeen[name])
		w.mu.Unlock()
		if silent < w.cfg.ServiceSilentAfter {
			w.alerts.clear(key, fmt.Sprintf("service %s answers PING again", name))
			continue
		}
		txt := fmt.Sprintf("service %s has not answered $SRV.PING for %s", name, silent.Round(time.Second))
		if w.deps.RestartService != nil {
			txt += "; restart requested"
		}
		w.alerts.raise(key, CondServiceSilent, txt)
		w.restartService(ctx, now, name)
	}
}

func (w *Watchdog) restartService(ctx context.Context, now time.Time, name string) {
	if w.deps.RestartService == nil {
		return
	}
	w.mu.Lock()
	last, ok := w.svcRestarted[name]
	due := !ok || now.Sub(last) >= w.cfg.ServiceSilentAfter
	if due {
		w.svcRestarted[name] = now
	}
	w.mu.Unlock()
	if !due {
		return
	}
	err := w.deps.RestartService(ctx, name)
	w.act(ActionRestartService, err, func(e *zerolog.Event) *zerolog.Event { return e.Str("target", name) })
}
