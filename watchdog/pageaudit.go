package watchdog

import (
	"context"
	"fmt"
	"sync"
	"time"

	"sluice.dev/mesh/ledger"
)

// deliveryEvery is how often the page looks for the oldest undelivered
// events and the last audit summary (about three requests per partition);
// the page polls every 2s and shows the cached answer in between.
const deliveryEvery = 10 * time.Second

// auditStartDelay is when the watchdog's first own audit runs.
const auditStartDelay = 30 * time.Second

// auditLoop audits the last watchdog.page.audit_window of the delivery
// ledger every audit_every and publishes the summary, so the page's
// "Delivery audit" is fresh without anyone running `sluice audit`.
func (w *Watchdog) auditLoop(ctx context.Context) {
	c := w.cfg.Page
	if c.AuditEvery <= 0 || c.Addr == PageAddrOff {
		return
	}
	t := time.NewTimer(min(auditStartDelay, c.AuditEvery))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.auditOnce(ctx)
		t.Reset(c.AuditEvery)
	}
}

// auditOnce runs one audit and publishes its summary. No ledger stream
// (ledger.enabled false): nothing to audit.
func (w *Watchdog) auditOnce(ctx context.Context) {
	if _, err := w.js.Stream(ctx, w.names.LedgerStream()); err != nil {
		w.log.Debug().Err(err).Msg("no delivery ledger to audit")
		return
	}
	now := w.now()
	res, err := ledger.Audit(ctx, w.js, w.names, ledger.AuditOptions{Since: now.Add(-w.cfg.Page.AuditWindow), Now: w.now})
	if err == nil {
		err = ledger.PublishSummary(ctx, w.js, w.names, ledger.Summarize(res))
	}
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn().Err(err).Msg("watchdog audit of the delivery ledger failed")
		}
		return
	}
	w.page.deliv.mu.Lock()
	w.page.deliv.at = time.Time{} // the page reads the new summary at once
	w.page.deliv.mu.Unlock()
	ev := w.log.Info()
	if !res.OK() {
		ev = w.log.Warn()
	}
	ev.Bool("ok", res.OK()).Int("accepted", res.Totals.Accepted).Int("lost", res.Totals.Lost).
		Msg("watchdog audited the delivery ledger")
}

// deliveryCache holds the page's last look at the delivery ledger.
type deliveryCache struct {
	mu     sync.Mutex
	at     time.Time
	audit  *ledger.Summary
	oldest *ledger.Oldest
	err    error
}

// delivery returns the last audit summary and the oldest undelivered
// events, looked up at most every deliveryEvery. Errors go to fail.
func (p *Page) delivery(ctx context.Context, fail func(error)) (*ledger.Summary, *ledger.Oldest) {
	c := &p.deliv
	c.mu.Lock()
	defer c.mu.Unlock()
	now := p.w.now()
	if c.at.IsZero() || now.Sub(c.at) >= deliveryEvery {
		c.at, c.err = now, nil
		s, err := ledger.LastSummary(ctx, p.w.js, p.w.names)
		if err != nil {
			c.err = fmt.Errorf("last audit: %w", err)
		} else {
			c.audit = s
		}
		o, err := ledger.FindOldest(ctx, p.w.js, p.w.names, now)
		if err != nil {
			c.err = fmt.Errorf("oldest undelivered: %w", err)
		} else {
			c.oldest = &o
		}
	}
	if c.err != nil {
		fail(c.err)
	}
	return c.audit, c.oldest
}
