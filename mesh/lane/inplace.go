package lane

import (
	"time"
)

// localRetryMax is the longest retry delay the runner waits out with the
// message in hand instead of naking it. A short retry (a flaky
// dependency's in-place try, a few milliseconds) then costs no nak, no
// redelivery and no new pull: the server's round trip would take longer
// than the wait itself. Longer delays are naked with the delay, as before,
// so the server holds the message and the lane's heartbeat does not run
// for seconds.
const localRetryMax = 100 * time.Millisecond

// retryHere waits out o (a KindRetry of at most localRetryMax) with m in
// hand and reports whether the handler may be called again: false when the
// lane is stopping or m was fenced meanwhile, and the caller settles o as
// usual (a nak with its delay). The message stays unacked and in flight
// throughout: nothing of the partition can pass it, and a kill redelivers
// it as it would after a nak.
func (l *lane) retryHere(m *Msg, o Outcome) bool {
	if o.Kind != KindRetry || o.Delay > localRetryMax || m.fenced.Load() {
		return false
	}
	t := time.NewTimer(o.Delay)
	defer t.Stop()
	l.beat(m.raw) // the wait counts as work on m
	defer l.beat(nil)
	select {
	case <-t.C:
	case <-l.ctx.Done():
		return false
	case <-l.quit:
		return false
	}
	if m.fenced.Load() || l.isStopping() {
		return false
	}
	l.mu.Lock()
	l.countRetry(o.Err)
	l.headInHand++
	m.Failures, m.InHand = l.headFailures, l.headInHand
	l.mu.Unlock()
	l.event(l.log.Debug(), m).Err(o.Err).Dur("delay", o.Delay).Int("failures", m.Failures).Msg("retry in hand")
	if obs := l.g.cfg.Observe; obs != nil {
		obs(Observation{Stage: l.g.cfg.Stage, Partition: l.p, Kind: o.Kind, Duration: time.Since(m.received),
			Stored: m.Stored, Err: o.Err, Msg: m, Outcome: o})
	}
	return true
}
