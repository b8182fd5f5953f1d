package lane

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// initialValuesTimeout bounds how long watchKV waits for a bucket's current
// values.
const initialValuesTimeout = 10 * time.Second

// watchKV watches filter on kv and hands every current value to initial,
// returning once the watcher marks the end of them (a nil entry), so the
// caller's in-memory view is complete before a lane handles a message. The
// caller then follows w.Updates() and, when done, stops w and calls cancel.
// what names the view in errors.
func watchKV(ctx context.Context, kv jetstream.KeyValue, filter, what string,
	initial func(jetstream.KeyValueEntry)) (w jetstream.KeyWatcher, cancel context.CancelFunc, err error) {
	wctx, cancel := context.WithCancel(context.Background())
	w, err = kv.Watch(wctx, filter)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("lane: watch %s: %w", what, err)
	}
	fail := func(err error) (jetstream.KeyWatcher, context.CancelFunc, error) {
		_ = w.Stop()
		cancel()
		return nil, nil, err
	}
	timeout := time.After(initialValuesTimeout)
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return w, cancel, nil
			}
			initial(e)
		case <-timeout:
			return fail(fmt.Errorf("lane: %s watch did not deliver its initial values", what))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
}
