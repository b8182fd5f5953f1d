package meshtest

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TCPProxy forwards a loopback port to a database server; Down() cuts
// every connection and closes new ones at once, like a database host going
// away, Up() forwards again.
//
// The listener stays open while down: closing it and listening again on
// the same port raced with the kernel handing that ephemeral port to some
// client socket in the meantime ("bind: address already in use" under
// load).
type TCPProxy struct {
	t      testing.TB
	target string
	addr   string // see Addr

	mu     sync.Mutex
	down   bool
	closed bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func NewTCPProxy(t testing.TB, target string) *TCPProxy {
	p := &TCPProxy{t: t, target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.Down()
		_ = ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *TCPProxy) serve(ln net.Listener) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.isDown() {
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, up) {
				continue
			}
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				}()
			}
		}
	}()
}

func (p *TCPProxy) isDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

func (p *TCPProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *TCPProxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func (p *TCPProxy) Up() {
	p.mu.Lock()
	defer p.mu.Unlock()
	require.False(p.t, p.closed, "TCPProxy.Up after the test ended")
	p.down = false
}

// Addr is the proxy's loopback host:port; point the client's DSN at it.
func (p *TCPProxy) Addr() string { return p.addr }
