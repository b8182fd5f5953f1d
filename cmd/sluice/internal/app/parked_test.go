package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

func parkedCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRoot(&stdout, &stderr)
	root.SetArgs(args)
	err := root.Execute()
	return stdout.String() + stderr.String(), err
}

func TestParkedCommands(t *testing.T) {
	js, names := cliServer(t, 1)
	ctx := context.Background()

	var mu sync.Mutex
	var seen []string
	reject := map[string]bool{"k-0": true, "x-0": true}
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageDispatcher, Names: names, Logger: zerolog.Nop(),
		IsolateKeys: true,
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			mu.Lock()
			defer mu.Unlock()
			if reject[string(m.Data)] {
				return lane.Park("crm rejected", errors.New("422"), nil)
			}
			seen = append(seen, string(m.Data))
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	for _, key := range []string{"k", "x"} {
		for i := range 2 {
			m := nats.NewMsg(names.DispatchSubject(0, "order", key))
			m.Data = []byte(fmt.Sprintf("%s-%d", key, i))
			m.Header.Set(nats.MsgIdHdr, string(m.Data))
			_, err := js.PublishMsg(ctx, m)
			require.NoError(t, err)
		}
	}
	require.Eventually(t, func() bool {
		out, err := parkedCLI(t, "parked", "ls")
		return err == nil && bytes.Count([]byte(out), []byte("crm rejected")) == 2
	}, 10*time.Second, 50*time.Millisecond)
	out, err := parkedCLI(t, "parked", "ls")
	require.NoError(t, err)
	require.Regexp(t, `dispatcher\s+k\s+order\s+parked\s+2\s+`, out)

	out, err = parkedCLI(t, "parked", "show", "k")
	require.NoError(t, err)
	require.Contains(t, out, "Sluice-Park-Reason: crm rejected")
	require.Contains(t, out, "Sluice-Park-Reason: behind parked event k-0")
	require.Less(t, bytes.Index([]byte(out), []byte("k-0")), bytes.Index([]byte(out), []byte("\n  k-1")))

	mu.Lock()
	reject["k-0"] = false
	mu.Unlock()
	out, err = parkedCLI(t, "parked", "replay", "k", "--wait", "10s")
	require.NoError(t, err, out)
	require.Contains(t, out, "replayed 2 event(s) of k at dispatcher in 1 round(s): unblocked")
	mu.Lock()
	require.Equal(t, []string{"k-0", "k-1"}, seen)
	mu.Unlock()

	_, err = parkedCLI(t, "parked", "discard", "x")
	require.ErrorContains(t, err, "--reason is required")
	out, err = parkedCLI(t, "parked", "discard", "x", "--reason", "test record", "--by", "tester")
	require.NoError(t, err, out)
	require.Contains(t, out, "discarded 2 event(s) of x at dispatcher; key unblocked")
	out, err = parkedCLI(t, "parked", "ls")
	require.NoError(t, err)
	require.Contains(t, out, "no parked keys")
	_, err = parkedCLI(t, "parked", "replay", "x")
	require.ErrorIs(t, err, lane.ErrNotParked)
}
