package conn_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/conn"
	"sluice.dev/mesh/meshtest"
)

func TestWatchClosedReportsAClose(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, _ := meshtest.Connect(t, s.ClientURL())
	crash := make(chan error, 1)
	conn.WatchClosed(nc, crash, "svc")
	nc.Close()
	select {
	case err := <-crash:
		require.ErrorContains(t, err, "svc: NATS connection closed")
	case <-time.After(5 * time.Second):
		t.Fatal("no crash reported")
	}
}

func TestUnwatchedCloseIsQuiet(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, _ := meshtest.Connect(t, s.ClientURL())
	crash := make(chan error, 1)
	unwatch := conn.WatchClosed(nc, crash, "svc")
	unwatch()
	nc.Close()
	select {
	case err := <-crash:
		t.Fatalf("a clean stop reported %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}
