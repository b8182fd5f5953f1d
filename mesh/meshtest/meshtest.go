// Package meshtest starts real embedded nats-servers for tests and gives
// each test its own topology names.
package meshtest

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// RunServer starts a JetStream server on a free loopback port with its store
// in dir (t.TempDir() when empty) and shuts it down at the end of the test.
// opts add TLS and auth (WithTLS, WithAuthConfig).
func RunServer(t testing.TB, dir string, opts ...Option) *server.Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	return RunServerOn(t, dir, -1, opts...)
}

// RunServerOn starts a server on port (-1 for a free one); use it to restart
// a server on the same port and store.
func RunServerOn(t testing.TB, dir string, port int, opts ...Option) *server.Server {
	t.Helper()
	o := &server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
		MaxPayload: 8 << 20,
	}
	newSetup(opts).apply(t, o)
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats-server did not start")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect connects to s and returns the connection and its JetStream
// context; the connection is closed at the end of the test. The client
// reconnects forever, so a test may restart the server. opts add to the
// connection's options (credentials, nats.RootCAs, an inbox prefix...).
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

var seq atomic.Int64

// Topology returns a topology config with a subject prefix and stream names
// unique to this test process and call.
func Topology(partitions int) topology.Config {
	n := seq.Add(1)
	return topology.Config{
		Prefix:       fmt.Sprintf("t%d", n),
		StreamPrefix: fmt.Sprintf("T%d", n),
		Partitions:   partitions,
		AckWait:      5 * time.Second,
	}.WithDefaults()
}
