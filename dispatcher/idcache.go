package dispatcher

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The CRM id cache.
//
// An update or upsert needs the entity's CRM id, and reading it from the
// bucket's leader (leaderkv) was a JetStream API request per event: ~20 µs
// of CPU per event between the server and the client in a bench-quick
// profile (issue 14). The cache keeps the ids this process read or stored,
// and a watch of the bucket (updates only) brings every later change from
// anyone (another dispatcher replica, `sluice crm-ids set|remove|import`).
//
//   - An entry carries the revision it was read or written at; a value
//     older than what the cache already knows is never stored (a read that
//     raced with a change loses to the watch), and a change seen by the
//     watch replaces the entry or, for a delete, marks the key so the next
//     lookup reads the leader.
//   - Only while the watch runs: it starts before anything is cached (so
//     no change after a cached read can be missed) and, when it ends or
//     the connection reconnects (the watch may have missed changes while
//     cut off), the cache is emptied.
//   - An entry is used for idCacheTTL at most, then read from the leader
//     again: that bounds staleness if the watch silently stalled.
//   - Misses (no id yet) are not cached: the create that follows stores
//     the id, or another replica's create arrives through the watch.
//
// What it costs: a change made elsewhere reaches this process after the
// watch's delivery delay (normally well under a millisecond, idCacheTTL at
// most); until then an update may still go to the id it replaced. Without
// a cache the leader read saw every acknowledged change at once.
const (
	idCacheTTL = 10 * time.Second
	idCacheMax = 50000
)

type idCache struct {
	mu      sync.Mutex
	on      bool // the watch runs; nothing is cached otherwise
	entries map[string]idCached
	epoch   uint64 // the connection's reconnect count the entries belong to
	w       jetstream.KeyWatcher
	cancel  context.CancelFunc
	done    chan struct{} // closed when the watch loop ended
	now     func() time.Time
}

type idCached struct {
	id  string // "": the key changed at rev; read the leader
	rev uint64
	at  time.Time
}

// start watches b and turns the cache on. reconnects is the connection's
// reconnect count now.
func (c *idCache) start(b jetstream.KeyValue, reconnects uint64) error {
	c.stop()
	// Not the caller's context: the watch's ordered consumer uses it again
	// whenever it has to be recreated.
	ctx, cancel := context.WithCancel(context.Background())
	w, err := b.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		return err
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.on, c.w, c.done, c.cancel, c.epoch = true, w, done, cancel, reconnects
	c.entries = map[string]idCached{}
	if c.now == nil {
		c.now = time.Now
	}
	c.mu.Unlock()
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e != nil {
				c.changed(e)
			}
		}
		// The watch ended (stopped, or its subscription closed).
		c.mu.Lock()
		if c.w == w {
			c.on, c.entries = false, nil
		}
		c.mu.Unlock()
	}()
	return nil
}

// stop ends the watch and empties the cache.
func (c *idCache) stop() {
	c.mu.Lock()
	w, done, cancel := c.w, c.done, c.cancel
	c.on, c.entries, c.w, c.done, c.cancel = false, nil, nil, nil, nil
	c.mu.Unlock()
	if w != nil {
		_ = w.Stop()
		<-done
		cancel()
	}
}

// changed applies one change the watch delivered.
func (c *idCache) changed(e jetstream.KeyValueEntry) {
	id := ""
	if e.Operation() == jetstream.KeyValuePut {
		id = string(e.Value())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(e.Key(), id, e.Revision())
}

// get returns the cached id of key. reconnects is the connection's
// reconnect count now: after a reconnect everything is dropped.
func (c *idCache) get(key string, reconnects uint64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on {
		return "", false
	}
	if reconnects != c.epoch {
		c.entries, c.epoch = map[string]idCached{}, reconnects
		return "", false
	}
	e, ok := c.entries[key]
	if !ok || e.id == "" || c.now().Sub(e.at) > idCacheTTL {
		return "", false
	}
	return e.id, true
}

// put remembers id at rev (read from the leader or written by this
// process) unless the cache knows a later revision. reconnects as in get.
func (c *idCache) put(key, id string, rev, reconnects uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on || reconnects != c.epoch || id == "" {
		return
	}
	c.putLocked(key, id, rev)
}

func (c *idCache) putLocked(key, id string, rev uint64) {
	if !c.on {
		return
	}
	cur, ok := c.entries[key]
	if ok && cur.rev > rev {
		return // a later change is known already
	}
	if !ok && len(c.entries) >= idCacheMax {
		for k := range c.entries { // make room: any entry
			delete(c.entries, k)
			break
		}
	}
	// Changes of entities this process never looked up are kept too: a
	// leader read of the key may be on its way with the older value.
	c.entries[key] = idCached{id: id, rev: rev, at: c.now()}
}
