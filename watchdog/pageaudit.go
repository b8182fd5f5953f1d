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
