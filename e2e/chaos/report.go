package chaos

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"sluice.dev/loadgen"
)

// progress prints the CRM's distinct deliveries every 15 s until stopped.
func (s *suite) progress(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(15 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if st, err := s.crm.Stats(ctx); err == nil {
					s.logf("progress: %d events delivered (%d attempts, %d injected errors, %d/s last second)",
						st.Delivered-st.Duplicates, st.Attempts, st.Injected, st.Rate)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// waitDelivered waits until n distinct events got a 2xx from the CRM. It
// gives up after timeout, or when nothing moved for a minute and a half.
func (s *suite) waitDelivered(ctx context.Context, n int, timeout time.Duration) error {
	const stall, window = 90 * time.Second, 30 * time.Second
	deadline := time.Now().Add(timeout)
	last, lastAt := -1, time.Now()
	type sample struct {
		at  time.Time
		got int
	}
	var recent []sample // the last window's counts: a slow drain and a stuck one read differently
	for {
		st, err := s.crm.Stats(ctx)
		got := st.Delivered - st.Duplicates
		if err == nil && got >= n {
			s.logf("all %d events delivered", n)
			return nil
		}
		now := time.Now()
		if got != last {
			last, lastAt = got, now
		}
		recent = append(recent, sample{now, got})
		for len(recent) > 1 && now.Sub(recent[0].at) > window {
			recent = recent[1:]
		}
		if now.After(deadline) || now.Sub(lastAt) > stall || ctx.Err() != nil {
			if now.Sub(lastAt) > stall {
				return fmt.Errorf("only %d of %d events delivered: stuck (no progress for %s)", got, n, now.Sub(lastAt).Round(time.Second))
			}
			rate := float64(got-recent[0].got) / max(now.Sub(recent[0].at).Seconds(), 1)
			return fmt.Errorf("only %d of %d events delivered when the %s drain bound ended, still delivering %.0f/s "+
				"(a slow drain, not a stuck one: CHAOS_DRAIN raises the bound)", got, n, timeout, rate)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// summary prints the run: events, faults with their offsets, the CRM's and
// the audit's findings, wall time.
func (s *suite) summary(v verdict, res loadgen.Result, drainErr error, wall map[string]time.Duration) {
	w := s.out
	line := strings.Repeat("=", 72)
	fmt.Fprintf(w, "\n%s\nCHAOS SUMMARY\n%s\n", line, line)
	fmt.Fprintf(w, "cluster:   %d nats-server processes (one network namespace each), R3 streams, %d partitions\n",
		s.o.nodes, s.o.partitions)
	fmt.Fprintf(w, "services:  %s (one `sluice run --target` process each); CRM: sluice crmsim, 30%% 5xx\n",
		strings.Join(services, ", "))
	fmt.Fprintf(w, "events:    %d over %d keys via ingest HTTP over %s: %d acked (%d retried batches, %d duplicates, %d failed)\n",
		s.o.events, s.o.keys, s.o.publishFor, res.Published, res.Retries, res.Duplicates, res.Failed)
	s.mu.Lock()
	fmt.Fprintf(w, "faults (offsets from the first event, %s):\n", s.start.UTC().Format("2006-01-02T15:04:05Z"))
	for _, f := range s.faults {
		fmt.Fprintf(w, "  %s  %s\n", fmtOffset(f.at), f.what)
	}
	crashes := append([]string(nil), s.crashes...)
	startExits := append([]string(nil), s.startExits...)
	s.mu.Unlock()
	if len(startExits) > 0 {
		fmt.Fprintf(w, "exits during start-up (restarted): %s\n", strings.Join(startExits, "; "))
	}
	fmt.Fprintf(w, "unexpected process exits: %d\n", len(crashes))
	for _, c := range crashes {
		fmt.Fprintf(w, "  %s\n", c)
	}
	c := v.crm.Totals
	notDelivered := "lost"
	if drainErr != nil {
		notDelivered = "not delivered when the wait ended"
	}
	fmt.Fprintf(w, "CRM side:  %d/%d delivered, %s %d (with a later event of the key delivered: %d), reordered keys %d, unexpected %d; duplicates: %d events "+
		"(%d extra 2xx), with a different Idempotency-Key: %d; %d requests, %d injected errors\n",
		c.Delivered, c.Expected, notDelivered, c.Missing, len(v.holes), c.ReorderedKeys, c.Unexpected, v.dupEvents, c.ExtraDeliveries,
		len(v.dupMixedKeys), v.attempts, v.injected)
	if v.auditErr != nil {
		fmt.Fprintf(w, "audit:     FAILED: %v\n", v.auditErr)
	} else {
		a := v.audit.Totals
		fmt.Fprintf(w, "audit:     accepted %d, delivered %d, parked %d, in flight %d, lost %d, reordered %d (keys %d), "+
			"duplicates %d, possible duplicates %d\n", a.Accepted, a.Delivered, a.Parked, a.InFlight, a.Lost,
			a.Reordered, a.ReorderedKeys, a.Duplicates, a.PossibleDuplicates)
	}
	for _, f := range v.findings(5) {
		fmt.Fprintf(w, "  %s\n", f)
	}
	if drainErr != nil {
		fmt.Fprintf(w, "drain:     %v\n", drainErr)
	}
	fmt.Fprintf(w, "wall:      %s (setup %s, traffic+faults %s, drain %s, verdict %s)\n",
		wall["total"].Round(time.Second), wall["setup"].Round(time.Second), wall["traffic"].Round(time.Second),
		wall["drain"].Round(time.Second), wall["verdict"].Round(time.Second))
	verdictWord := "PASS"
	if !v.ok() || drainErr != nil || len(crashes) > 0 || res.Published != s.o.events {
		verdictWord = "FAIL"
	}
	fmt.Fprintf(w, "verdict:   %s\n%s\n", verdictWord, line)
}

// redactDSN drops the password of a DSN for messages.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}
