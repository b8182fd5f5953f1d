package lane_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
)

// TestRedelivered: a delivery counts as "another process may have sent
// it" when the server delivered the message more often than this process
// ran deliveries of it; retries in hand are attempts without a delivery.
// The ledger's audit applies the same rule to its records
// (lane.DeliveredElsewhere); the dispatcher finds before a create then.
func TestRedelivered(t *testing.T) {
	for _, tc := range []struct {
		name             string
		delivered        uint64
		failures, inHand int
		want             bool
	}{
		{"first delivery, first try", 1, 0, 0, false},
		{"second delivery, first try here", 2, 0, 0, true},
		{"naked retries here", 3, 2, 0, false},
		{"retries in hand here, first delivery", 1, 2, 2, false},
		{"retries in hand here after another process had it", 2, 2, 2, true},
		{"one naked and one in hand here", 2, 2, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &lane.Msg{NumDelivered: tc.delivered, Failures: tc.failures, InHand: tc.inHand}
			require.Equal(t, tc.want, m.Redelivered())
			require.Equal(t, tc.want, lane.DeliveredElsewhere(tc.delivered, tc.failures+1, tc.inHand))
		})
	}
}

// A replayed message (a held key's round, an operator's replay) gets
// RoundInPlace more tries in place, but never so many that its own
// failures open the partition's circuit (CircuitFailures in a row, the
// step-aside one included): a config with a low circuit keeps InPlace.
func TestInPlaceTriesOfAReplayedMessageStayBelowTheCircuit(t *testing.T) {
	replayed := &lane.Msg{Header: nats.Header{lane.HeaderReplay: []string{"r1"}}}
	fresh := &lane.Msg{Header: nats.Header{}}
	for _, tc := range []struct {
		name string
		sa   lane.StepAside
		m    *lane.Msg
		want int
	}{
		{"a new message", lane.StepAside{InPlace: 2, RoundInPlace: 3, CircuitFailures: 8}, fresh, 2},
		{"a replayed message", lane.StepAside{InPlace: 2, RoundInPlace: 3, CircuitFailures: 8}, replayed, 5},
		{"capped below the circuit", lane.StepAside{InPlace: 2, RoundInPlace: 10, CircuitFailures: 8}, replayed, 6},
		{"a low circuit keeps InPlace", lane.StepAside{InPlace: 2, RoundInPlace: 3, CircuitFailures: 3}, replayed, 2},
		{"RoundInPlace 0", lane.StepAside{InPlace: 2, CircuitFailures: 8}, replayed, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.sa.InPlaceTries(tc.m))
		})
	}
}
