package lane_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// A held key whose count promises a message the parked stream does not
// hold (a behind-park deduplicated after a kill) is freed by its next
// round instead of staying "replaying" for ever, and the key's next event
// goes through.
func TestHeldKeyWithNothingParkedIsFreed(t *testing.T) {
	names, js := setup(t, 1)
	ctx := context.Background()
	seen := make(chan string, 10)
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		IsolateKeys: true, StepAside: lane.StepAside{Enabled: true},
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			seen <- string(m.Data)
			return lane.Done()
		}})
	require.NoError(t, err)

	putParkedKey(t, js, names, lane.ParkedKey{Stage: topology.StageEnricher, Type: "t1", Key: "k", KeyToken: "k",
		FirstSeq: 1, FirstID: "k-0", Reason: lane.ReasonRetrying + ": 503", ParkedAt: time.Now().UTC(),
		Count: 1, State: lane.StateHeld, Held: true, Failures: 1, RetryAt: time.Now().UTC()})

	require.NoError(t, g.Start(ctx))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	adm, err := lane.OpenParked(ctx, js, names)
	require.NoError(t, err)
	var keys []lane.ParkedKey
	require.Eventually(t, func() bool {
		keys, err = adm.List(ctx)
		return err == nil && len(keys) == 0
	}, 15*time.Second, 20*time.Millisecond, "held key not freed: %+v", &keys)

	publish(t, js, names, "t1", "k", 1)
	select {
	case got := <-seen:
		require.Equal(t, "k-0", got)
	case <-time.After(10 * time.Second):
		t.Fatal("the freed key's next event was not handled")
	}
}
