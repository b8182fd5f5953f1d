package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/ledger"
)

// A delivery's and a park's ledger records are stored before the dispatch
// message is acked: while the ledger stream cannot store them, the lane
// holds the message (the CRM sees it again, deduplicated by its
// Idempotency-Key) instead of acking a message whose record could still be
// lost (issue 11: a kill -9 kept the ack and dropped the record).
func TestRecordsAreStoredBeforeTheAck(t *testing.T) {
	e := newEnv(t, 1)
	crm := newFakeCRM(t, func(c call, _ int) reply {
		if c.Header.Get("Idempotency-Key") == "b#1" {
			return reply{Status: 422, Body: `{"error":"bad"}`}
		}
		return reply{Status: 200, Body: `{"ok":true}`}
	})
	var counts ledger.Counters
	w, err := ledger.NewWriter(e.nc, e.names, ledger.WriterConfig{Counters: &counts})
	require.NoError(t, err)
	svc, err := dispatcher.New(fast(crm.srv.URL), dispatcher.Deps{NC: e.nc, JS: e.js, Names: e.names,
		Logger: zerolog.Nop(), Ledger: w})
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(ctx))
	})
	// No ledger stream yet: no record can be stored.
	e.publish(t, request("a", 1))
	e.publish(t, request("b", 1))
	tries := func(id string) int {
		n := 0
		for _, got := range ids(crm.Calls()) {
			if got == id {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return tries("a#1") >= 2 }, 20*time.Second, 10*time.Millisecond,
		"the delivery was acked without its ledger record")
	require.Positive(t, e.dispatchLeft(t), "a message without its record stays in the dispatch stream")
	require.Positive(t, counts.Unstored.Load())

	require.NoError(t, ledger.Ensure(context.Background(), e.js, e.names, ledger.DefaultConfig()))
	require.Eventually(t, func() bool { return e.dispatchLeft(t) == 0 }, 20*time.Second, 20*time.Millisecond)
	require.GreaterOrEqual(t, tries("b#1"), 1)
	recs, _, err := (&ledger.Source{JS: e.js, Names: e.names}).Records(context.Background(), ledger.Filter{}, time.Time{}, 0)
	require.NoError(t, err)
	steps := map[string]ledger.Step{}
	for _, r := range recs {
		steps[r.EventID] = r.Step
	}
	require.Equal(t, map[string]ledger.Step{"a#1": ledger.StepDelivered, "b#1": ledger.StepParked}, steps)
}
