package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// At start, JetStream that does not answer yet (a forming cluster) is
// waited for; an answer that will not change fails at once.
func TestStartWaitsForJetStreamOnlyWhileItDoesNotAnswer(t *testing.T) {
	unavailable := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	tests := []struct {
		name     string
		errs     []error // one per try; nil after them
		limit    time.Duration
		tries    int
		wantErr  error
		warnings int
	}{
		{"a timeout, then an answer", []error{fmt.Errorf("look up stream SLUICE_EVENTS: %w", context.DeadlineExceeded)}, time.Minute, 2, nil, 1},
		{"no responders and 503s, then an answer", []error{nats.ErrNoResponders, unavailable, unavailable}, time.Minute, 4, nil, 3},
		{"peers offline, then an answer", []error{fmt.Errorf("ensure stream SLUICE_EVENTS: %w", &jetstream.APIError{Code: 400, ErrorCode: 10005,
			Description: "no suitable peers for placement, peer offline"})}, time.Minute, 2, nil, 1},
		{"a changed partition count fails at once", []error{topology.ErrPartitionsChanged}, time.Minute, 1, topology.ErrPartitionsChanged, 0},
		{"a refused config fails at once", []error{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}},
			time.Minute, 1, &jetstream.APIError{}, 0},
		{"not ready for longer than the limit", []error{nats.ErrTimeout, nats.ErrTimeout, nats.ErrTimeout, nats.ErrTimeout}, 400 * time.Millisecond,
			2, nats.ErrTimeout, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tries := 0
			err := whenReady(context.Background(), zerolog.New(&buf), "topology", readyWait{Limit: tc.limit, TryFor: time.Second}, func(ctx context.Context) error {
				_, ok := ctx.Deadline()
				require.True(t, ok, "each try is bounded")
				tries++
				if tries <= len(tc.errs) {
					return tc.errs[tries-1]
				}
				return nil
			})
			require.Equal(t, tc.tries, tries)
			switch want := tc.wantErr.(type) {
			case nil:
				require.NoError(t, err)
			case *jetstream.APIError:
				var got *jetstream.APIError
				require.ErrorAs(t, err, &got)
			default:
				require.ErrorIs(t, err, want)
			}
			require.Equal(t, tc.warnings, strings.Count(buf.String(), "JetStream is not ready yet"), buf.String())
		})
	}
}

func TestStartStopsWaitingWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	err := whenReady(ctx, zerolog.Nop(), "topology", readyWait{Limit: time.Minute, TryFor: time.Second}, func(context.Context) error {
		cancel()
		return nats.ErrTimeout
	})
	require.True(t, errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.Canceled), "%v", err)
}

// A service started while two of its cluster's three nodes are down (the
// cluster restarting, or starting with the services) waits until JetStream
// answers instead of exiting: with one try its lookup of the events stream
// timed out and the process exited (the chaos suite's ingest).
func TestRunWaitsForAClusterThatIsNotReadyYet(t *testing.T) {
	c := meshtest.RunCluster(t, 3)
	c.Kill(1)
	c.Kill(2)
	_, js := meshtest.Connect(t, c.URLs())
	cfg := meshtest.Topology(2)
	cfg.Replicas = 3
	names := topology.New(cfg)
	var log meshtest.LogBuffer
	done := make(chan error, 1)
	// sluice run's wait (ensureTopology) with a shorter try, so that the
	// first one fails within 2 s.
	w := readyWait{Limit: time.Minute, TryFor: 2 * time.Second}
	go func() {
		done <- whenReady(context.Background(), zerolog.New(&log), "topology", w,
			func(ctx context.Context) error { return names.Ensure(ctx, js) })
	}()
	if !assert.Eventually(t, func() bool { return strings.Contains(log.String(), "JetStream is not ready yet") },
		30*time.Second, 10*time.Millisecond, "the start should wait for JetStream") {
		select {
		case err := <-done:
			t.Fatalf("the start did not wait: %v; log: %s", err, log.String())
		default:
			t.Fatalf("the start neither waited nor ended; log: %s", log.String())
		}
	}
	c.Restart(1)
	c.Restart(2)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(w.Limit):
		t.Fatal("the topology was not created after the cluster came back")
	}
	_, err := js.Stream(context.Background(), names.EventsStream())
	require.NoError(t, err)
	t.Logf("while the cluster was down: %s", strings.SplitN(log.String(), "\n", 2)[0])
}
