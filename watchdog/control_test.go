package watchdog_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

func TestServeControl(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, _ := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(4))
	calls := make(chan int, 10)
	sub, err := watchdog.ServeControl(nc, names, "dispatcher", func(p int) error {
		switch p {
		case 2:
			return watchdog.ErrNotOwner
		case 3:
			return errors.New("lane broken")
		}
		calls <- p
		return nil
	}, zerolog.Nop())
	require.NoError(t, err)
	defer sub.Unsubscribe()

	for _, tc := range []struct {
		name    string
		body    string
		wantErr string // "" means ok
		noReply bool
		call    int
	}{
		{"restart", `{"action":"restart_lane","stage":"dispatcher","partition":1}`, "", false, 1},
		{"not json", `{"action":`, "bad control request", false, -1},
		{"unknown field", `{"action":"restart_lane","stage":"dispatcher","partition":1,"x":1}`, "unknown field", false, -1},
		{"unknown action", `{"action":"reboot","stage":"dispatcher","partition":1}`, "unknown control action", false, -1},
		{"wrong stage", `{"action":"restart_lane","stage":"enricher","partition":1}`, "not served by dispatcher", false, -1},
		{"out of range", `{"action":"restart_lane","stage":"dispatcher","partition":4}`, "out of range", false, -1},
		{"restart fails", `{"action":"restart_lane","stage":"dispatcher","partition":3}`, "lane broken", false, -1},
		{"other owner", `{"action":"restart_lane","stage":"dispatcher","partition":2}`, "", true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := nc.Request(names.ControlSubject("dispatcher"), []byte(tc.body), 300*time.Millisecond)
			if tc.noReply {
				require.Error(t, err, "an instance not owning the partition must stay silent")
				return
			}
			require.NoError(t, err)
			var r watchdog.ControlReply
			require.NoError(t, json.Unmarshal(m.Data, &r))
			if tc.wantErr == "" {
				require.True(t, r.OK, r.Error)
			} else {
				require.False(t, r.OK)
				require.Contains(t, r.Error, tc.wantErr)
			}
			if tc.call >= 0 {
				require.Equal(t, tc.call, <-calls)
			}
		})
	}
	require.Empty(t, calls)

	ctx := context.Background()
	require.NoError(t, watchdog.RequestRestartLane(ctx, nc, names, topology.StageDispatcher, 0))
	require.Equal(t, 0, <-calls)
	err = watchdog.RequestRestartLane(ctx, nc, names, topology.StageDispatcher, 3)
	require.ErrorIs(t, err, watchdog.ErrControlFailed)
	require.ErrorContains(t, err, "lane broken")
	err = watchdog.RequestRestartLane(ctx, nc, names, topology.StageEnricher, 0)
	require.ErrorIs(t, err, watchdog.ErrNoOwner, "nobody serves the enricher")
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err = watchdog.RequestRestartLane(short, nc, names, topology.StageDispatcher, 2)
	require.ErrorIs(t, err, watchdog.ErrNoOwner, "the only instance does not own partition 2")
}

func FuzzDecodeControlRequest(f *testing.F) {
	for _, s := range []string{
		`{"action":"restart_lane","stage":"dispatcher","partition":3}`,
		`{"action":"restart_lane","stage":"enricher","partition":0}`,
		`{"action":""}`, `{"partition":-1,"action":"x"}`, `{} {}`, `[]`, `null`, ``,
		`{"action":"restart_lane","partition":1e40}`, `{"action":"a","stage":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := watchdog.DecodeControlRequest(b)
		if err != nil {
			if !errors.Is(err, watchdog.ErrBadControlRequest) {
				t.Fatalf("error does not wrap ErrBadControlRequest: %v", err)
			}
			if r != (watchdog.ControlRequest{}) {
				t.Fatalf("non-zero request with error: %+v", r)
			}
			return
		}
		if r.Action == "" || r.Partition < 0 {
			t.Fatalf("accepted invalid request %+v", r)
		}
		// A decoded request re-encodes and decodes to itself.
		b2, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := watchdog.DecodeControlRequest(b2)
		if err != nil || r2 != r {
			t.Fatalf("round trip %+v -> %s -> %+v (%v)", r, b2, r2, err)
		}
	})
}
