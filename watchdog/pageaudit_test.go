package watchdog_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/ledger"
)

// The page shows the last `sluice audit` summary and the oldest events
// still waiting: here a parked key's first event.
func TestPageShowsTheLastAuditAndTheOldestUndelivered(t *testing.T) {
	f := newPageFixture(t, "")
	ctx := context.Background()
	f.parkKey("k1", 2)
	require.NoError(t, ledger.Ensure(ctx, f.js, f.names, ledger.DefaultConfig()))
	sum := ledger.Summary{RanAt: time.Now().UTC(), Totals: ledger.Totals{Accepted: 10, Delivered: 7, Parked: 2, Lost: 1},
		Lost: []string{"k2-9"}}
	require.NoError(t, ledger.PublishSummary(ctx, f.js, f.names, sum))

	st := f.status()
	require.Empty(t, st.Errors)
	require.NotNil(t, st.Audit)
	require.False(t, st.Audit.OK)
	require.Equal(t, 1, st.Audit.Totals.Lost)
	require.Equal(t, []string{"k2-9"}, st.Audit.Lost)
	require.NotNil(t, st.Oldest)
	require.Nil(t, st.Oldest.InFlight, "the lane has settled everything")
	require.NotNil(t, st.Oldest.Parked)
	require.Equal(t, "k1-0", st.Oldest.Parked.ID)
	require.Equal(t, "k1", st.Oldest.Parked.Key)
	require.Contains(t, st.Oldest.Parked.Why, "crm rejected")
}
