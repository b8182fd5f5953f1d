package lane_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Lanes start goroutines of their own (consume loops, heartbeats, the
// fence and parked-keys watches, replica membership): every test must end
// them all when it stops its groups.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
