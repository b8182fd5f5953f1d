package watchdog_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/ledger"
	"sluice.dev/watchdog"
)

// The page's delivery audit is refreshed by the watchdog itself, without
// anyone running `sluice audit`.
func TestWatchdogAuditsTheLedgerItself(t *testing.T) {
	f := newPageFixtureWith(t, "", 1, func(c *watchdog.Config) {
		c.Page.AuditEvery, c.Page.AuditWindow = 300*time.Millisecond, time.Hour
	})
	require.Nil(t, f.status().Audit, "no audit before the ledger exists")
	require.NoError(t, ledger.Ensure(context.Background(), f.js, f.names, ledger.Config{}))
	f.publish("A", 0, 3)
	var first time.Time
	require.Eventually(t, func() bool {
		a := f.status().Audit
		if a == nil {
			return false
		}
		first = a.RanAt
		return true
	}, 20*time.Second, 50*time.Millisecond, "the watchdog publishes an audit summary")
	require.Eventually(t, func() bool {
		a := f.status().Audit
		return a != nil && a.RanAt.After(first)
	}, 20*time.Second, 50*time.Millisecond, "and refreshes it every audit_every")
}
