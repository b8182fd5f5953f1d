package meshtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is an n-node JetStream cluster running in the test process on
// loopback ports, each node with its own store. Nodes can be killed and
// restarted on the same ports and store.
type Cluster struct {
	t     testing.TB
	name  string
	opts  []*server.Options
	setup setup
	mu    sync.Mutex
	nodes []*server.Server // nil while killed
}

// RunCluster starts an n-node JetStream cluster, waits until every route is
// up and the cluster has a JetStream meta leader, and shuts it down at the
// end of the test. opts add TLS and auth on the client ports (WithTLS,
// WithAuthConfig); routes stay plain.
func RunCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("RunCluster: n must be >= 1")
	}
	clientPorts, routePorts := FreePorts(t, n), FreePorts(t, n) // held until the end: a killed node restarts on them
	name := fmt.Sprintf("C%d", seq.Add(1))
	routes := make([]string, n)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &Cluster{t: t, name: name, nodes: make([]*server.Server, n), setup: newSetup(opts)}
	for i := range n {
		c.opts = append(c.opts, &server.Options{
			ServerName: fmt.Sprintf("%s-n%d", name, i),
			Host:       "127.0.0.1", Port: clientPorts[i],
			JetStream: true, StoreDir: t.TempDir(),
			NoSigs: true, NoLog: true, MaxPayload: 8 << 20,
			Cluster: server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: routePorts[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		})
	}
	t.Cleanup(c.shutdown)
	for i := range n {
		c.start(i)
	}
	c.WaitReady()
	return c
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	o := *c.opts[i] // the server keeps and mutates its options
	c.setup.apply(c.t, &o)
	s, err := server.NewServer(&o)
	if err != nil {
		c.t.Fatalf("nats-server %d: %v", i, err)
	}
	lg := &startLog{}
	s.SetLogger(lg, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		c.t.Fatalf("nats-server %d did not start within 10s (client port %d, route port %d); its log:\n%s",
			i, o.Port, o.Cluster.Port, lg)
	}
	c.mu.Lock()
	c.nodes[i] = s
	c.mu.Unlock()
}

func (c *Cluster) shutdown() {
	c.mu.Lock()
	nodes := append([]*server.Server(nil), c.nodes...)
	c.mu.Unlock()
	for _, s := range nodes {
		if s != nil {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
}

// WaitReady waits until every running node has its routes to the other
// running nodes, the cluster has a JetStream meta leader that has every
// running node as an online peer, and every running node's meta state is
// current. It does not wait for streams on a restarted
// node to catch up; check StreamInfo.Cluster.Replicas[].Current for that.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c.ready() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	c.t.Fatalf("cluster %s not ready within 30s", c.name)
}

func (c *Cluster) ready() bool {
	running := c.Servers()
	live := 0
	for _, s := range running {
		if s != nil {
			live++
		}
	}
	leader := false
	for _, s := range running {
		if s == nil {
			continue
		}
		if s.NumRoutes() < live-1 || !s.JetStreamIsCurrent() {
			return false
		}
		// The meta leader places a new R3 stream only on peers it has
		// current stats from: without this, a stream created right after
		// WaitReady can fail with "no suitable peers for placement, peer
		// offline" (make stress saw it).
		if s.JetStreamIsLeader() {
			if len(s.JetStreamClusterPeers()) < live {
				return false
			}
			leader = true
		}
	}
	return leader
}

// URLs is the comma-separated list of every node's client URL, killed
// nodes included (clients skip them while they are down).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.opts))
	for i, o := range c.opts {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return strings.Join(urls, ",")
}

// Servers returns the nodes by index; a killed node is nil.
func (c *Cluster) Servers() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*server.Server(nil), c.nodes...)
}

// Name returns node i's server name (as in ConnectedServerName and
// StreamInfo.Cluster.Leader).
func (c *Cluster) Name(i int) string { return c.opts[i].ServerName }

// Index returns the index of the node with the given server name, or -1.
func (c *Cluster) Index(serverName string) int {
	for i, o := range c.opts {
		if o.ServerName == serverName {
			return i
		}
	}
	return -1
}

// Kill shuts node i down (its store stays for Restart).
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts killed node i again on the same ports and store and waits
// until the cluster is ready again.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	running := c.nodes[i] != nil
	c.mu.Unlock()
	if running {
		c.t.Fatalf("Restart(%d): node is running", i)
	}
	c.start(i)
	c.WaitReady()
}

// StreamLeader returns the index of the node leading stream, or -1 when the
// stream has no leader right now. Stream info is answered by the stream
// leader: while a new one is being elected the request gets no answer, so
// poll with a short ctx (about 1s) per call.
func (c *Cluster) StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1, err
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return -1, nil
	}
	return c.Index(info.Cluster.Leader), nil
}

// startLog keeps the last lines a node logged (notices, warnings, errors),
// so that a node that does not start says why (a port in use, a slow store).
type startLog struct {
	mu    sync.Mutex
	lines []string
}

const startLogLines = 40

func (l *startLog) add(level, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, time.Now().Format("15:04:05.000")+" "+level+" "+fmt.Sprintf(format, v...))
	if len(l.lines) > startLogLines {
		l.lines = l.lines[len(l.lines)-startLogLines:]
	}
}

func (l *startLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *startLog) Noticef(format string, v ...any) { l.add("INF", format, v...) }
func (l *startLog) Warnf(format string, v ...any)   { l.add("WRN", format, v...) }
func (l *startLog) Errorf(format string, v ...any)  { l.add("ERR", format, v...) }
func (l *startLog) Fatalf(format string, v ...any)  { l.add("FTL", format, v...) }
func (l *startLog) Debugf(string, ...any)           {}
func (l *startLog) Tracef(string, ...any)           {}
