package app

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
)

// stallProxy forwards to a server until stall: from then on it keeps every
// connection open and forwards nothing, in either direction, and holds new
// connections open without answering — a server cut off by a network
// partition, as the client sees it (no reset, no close, silence).
type stallProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	stalled bool
	conns   []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &stallProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *stallProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
}

func (p *stallProxy) isStalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled
}

func (p *stallProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		stalled := p.stalled
		p.mu.Unlock()
		if stalled {
			continue // held open, never answered
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, up)
		p.mu.Unlock()
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies until the proxy stalls; then it reads and drops.
func (p *stallProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.isStalled() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A service connection whose server goes silent (a partition: the TCP
// connection stays open, nothing comes back) moves to another server of
// nats.url instead of waiting for the partition to heal.
func TestConnectionLeavesAServerCutOffByAPartition(t *testing.T) {
	old, oldOut := pingInterval, maxPingsOut
	pingInterval, maxPingsOut = 200*time.Millisecond, 2
	t.Cleanup(func() { pingInterval, maxPingsOut = old, oldOut })

	a, b := meshtest.RunServer(t, ""), meshtest.RunServer(t, "")
	pa, pb := newStallProxy(t, a.Addr().String()), newStallProxy(t, b.Addr().String())
	bs := &bus{cfg: NATSConfig{URL: pa.url() + "," + pb.url()}, url: pa.url() + "," + pb.url(), log: zerolog.Nop()}
	nc, _, err := bs.connect("partition-test")
	require.NoError(t, err)
	t.Cleanup(nc.Close)

	first := nc.ConnectedUrl()
	cut, other := pa, pb
	if first == pb.url() {
		cut, other = pb, pa
	}
	cut.stall()
	require.Eventually(t, func() bool { return nc.IsConnected() && nc.ConnectedUrl() == other.url() },
		30*time.Second, 50*time.Millisecond, "still on the cut-off server %s", first)
	require.NoError(t, nc.Flush())
}
