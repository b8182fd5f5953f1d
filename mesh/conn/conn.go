// Package conn watches the NATS connection a service runs on, so that a
// supervisor (watchdog.Supervisor) learns when the service lost it for good.
package conn

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// WatchClosed sends one error on crash when nc closes for good (not a
// reconnect) while the watch runs; it never blocks on a full channel. The
// returned func ends the watch (call it on a clean stop).
func WatchClosed(nc *nats.Conn, crash chan<- error, service string) (unwatch func()) {
	report := func() {
		select {
		case crash <- fmt.Errorf("%s: NATS connection closed", service):
		default:
		}
	}
	closed := nc.StatusChanged(nats.CLOSED)
	if nc.IsClosed() {
		nc.RemoveStatusListener(closed)
		report()
		return func() {}
	}
	quit := make(chan struct{})
	go func() {
		defer nc.RemoveStatusListener(closed)
		select {
		case <-closed:
		case <-quit:
			return
		}
		select {
		case <-quit: // stopped cleanly just before the close
			return
		default:
		}
		report()
	}()
	return func() { close(quit) }
}
