package lane

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/leaderkv"
	"sluice.dev/mesh/topology"
)

// The lane fence.
//
// Pinned priority groups (topology.LaneConsumerConfig) give each lane to one
// replica at a time, but a replica can lose its pin while it still holds a
// message: cut off from the server (or frozen) for longer than both AckWait
// and PinnedTTL, it cannot send InProgress or pull, so the server pins
// another replica and redelivers the message there. JetStream still accepts
// the first replica's late ack (nats-server #6937), and nothing stops its
// handler from going on to its side effect. The fence is how the stale
// replica finds out.
//
// The fence of a lane is the last stream sequence any replica applied
// (acked as done, forwarded or parked), in the fence bucket under
// <stage>.<partition>, with the stream's creation time (a recreated stream
// starts its sequences again). Each Group keeps its stage's fences in
// memory from a KV watch, so reading it costs no round trip:
//
//   - Before calling the handler, the runner skips (acks, counts in
//     Stats.Fenced, logs) a message at or below the fence: a late duplicate.
//   - Msg.Fenced lets a handler ask again right before an irreversible side
//     effect (the dispatcher's CRM call); the runner asks again before it
//     publishes outputs, parks or pauses.
//   - A message held long (over AckWait/3, when the first InProgress was
//     due) or across a reconnect is suspect: then the fence is read from the
//     bucket, not from memory, since the watch may lag.
//   - Writes are coalesced and asynchronous: the latest value per lane, at
//     most one write in flight, every fenceFlushEvery and on Stop, with
//     compare-and-set so the fence never goes back. The first message a
//     replica applies under a new pin is written synchronously: that is the
//     message a stale replica may still hold.
//   - A lane reads its fence from the bucket when it opens its iterator,
//     and a deleted consumer is recreated after it (not from the start).
//
// What the fence does not prevent:
//
//   - A stale replica already inside its side effect (the CRM request is on
//     the wire) when the new one applies the same message: both happen, and
//     the stale one may land after the new replica's next message. Only the
//     target's own conditional writes could stop that. Keep AckWait well
//     above the slowest CRM call so that it takes a real partition or freeze.
//   - A stale replica that checks within the write delay of the new one
//     (fenceFlushEvery plus a KV round trip) after its first message under
//     the new pin: that first message is written synchronously, later ones
//     are not, but a stale replica only ever holds one message (the one the
//     new replica got first).
//   - A stale replica that does not ask: handlers with side effects must
//     call Msg.Fenced right before them.
//   - Duplicates after a consumer is recreated: up to fenceFlushEvery of
//     applied messages may not be in the fence yet and are delivered again.
//
// A consumer reset on purpose to an earlier position (rather than using
// `sluice replay`, which re-publishes) skips everything up to the fence;
// delete the lane's fence key to undo that.

// fenceFlushEvery is how often coalesced fence writes go out.
const fenceFlushEvery = 200 * time.Millisecond

// fenceSet is a Group's view of its stage's fences and its pending writes.
type fenceSet struct {
	kv     jetstream.KeyValue
	w      jetstream.KeyWatcher
	cancel context.CancelFunc
	log    zerolog.Logger

	mu    sync.Mutex
	seen  map[string]fenceEntry     // bucket state: from the watch, reads and own writes
	want  map[string]topology.Fence // local values not yet written
	keyMu map[string]*sync.Mutex    // held while a write of the key is in flight
	done  chan struct{}             // closed when the flusher exited
	stop  chan struct{}
}

type fenceEntry struct {
	f   topology.Fence
	rev uint64
}

func openFenceSet(ctx context.Context, js JetStream, names topology.Names, stage topology.Stage, log zerolog.Logger) (*fenceSet, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, names.FenceConfig())
	if err != nil {
		return nil, fmt.Errorf("lane: fence bucket: %w", err)
	}
	fs := &fenceSet{kv: leaderkv.Wrap(kv, js), log: log,
		seen: map[string]fenceEntry{}, want: map[string]topology.Fence{}, keyMu: map[string]*sync.Mutex{},
		done: make(chan struct{}), stop: make(chan struct{})}
	if fs.w, fs.cancel, err = watchKV(ctx, kv, string(stage)+".>", "fences", fs.observe); err != nil {
		return nil, err
	}
	go fs.follow()
	go fs.flusher()
	return fs, nil
}

func (fs *fenceSet) follow() {
	for e := range fs.w.Updates() {
		if e != nil {
			fs.observe(e)
		}
	}
}

func (fs *fenceSet) observe(e jetstream.KeyValueEntry) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if cur, ok := fs.seen[e.Key()]; ok && cur.rev >= e.Revision() {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		// An operator deleted the fence: forget it (and our pending value
		// stays pending; it will be written again).
		delete(fs.seen, e.Key())
		return
	}
	f, err := topology.ParseFence(e.Value())
	if err != nil {
		fs.log.Warn().Err(err).Str("fence", e.Key()).Msg("ignoring a bad fence value")
		return
	}
	fs.seen[e.Key()] = fenceEntry{f: f, rev: e.Revision()}
}

// current is the fence of key for the stream created at created, from
// memory: the bucket as last seen, or this process's newer value.
func (fs *fenceSet) current(key string, created time.Time) uint64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return max(fs.seen[key].f.For(created), fs.want[key].For(created))
}

// read reads key's fence from the bucket (one round trip) and returns the
// fence for the stream created at created.
func (fs *fenceSet) read(ctx context.Context, key string, created time.Time) (uint64, error) {
	e, err := fs.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		fs.mu.Lock()
		delete(fs.seen, key)
		fs.mu.Unlock()
	case err != nil:
		return 0, fmt.Errorf("read fence %s: %w", key, err)
	default:
		fs.observe(e)
	}
	return fs.current(key, created), nil
}

// advance records that f was applied; the flusher writes it.
func (fs *fenceSet) advance(key string, f topology.Fence) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f.Newer(fs.want[key]) {
		fs.want[key] = f
	}
}

func (fs *fenceSet) flusher() {
	defer close(fs.done)
	t := time.NewTicker(fenceFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-fs.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			fs.flush(ctx, false)
			cancel()
		}
	}
}

// flush writes every pending value, one key at a time; with wait false it
// skips a key whose write is in flight.
func (fs *fenceSet) flush(ctx context.Context, wait bool) {
	fs.mu.Lock()
	keys := make([]string, 0, len(fs.want))
	for k := range fs.want {
		keys = append(keys, k)
	}
	fs.mu.Unlock()
	for _, k := range keys {
		if err := fs.write(ctx, k, wait); err != nil && ctx.Err() == nil {
			fs.log.Warn().Err(err).Str("fence", k).Msg("fence write failed; retrying with the next flush")
		}
	}
}

// write writes key's pending value unless the bucket already holds a value
// at least as new, with compare-and-set on the revision last seen (a write
// of another replica in between is read and compared again). At most one
// write per key is in flight: with wait false a second caller returns at
// once, with wait true it waits for the first and then writes.
func (fs *fenceSet) write(ctx context.Context, key string, wait bool) error {
	fs.mu.Lock()
	km := fs.keyMu[key]
	if km == nil {
		km = &sync.Mutex{}
		fs.keyMu[key] = km
	}
	fs.mu.Unlock()
	if wait {
		km.Lock()
	} else if !km.TryLock() {
		return nil
	}
	defer km.Unlock()
	var last error
	for range 3 {
		fs.mu.Lock()
		f, pending := fs.want[key]
		cur, known := fs.seen[key]
		fs.mu.Unlock()
		if !pending {
			return nil
		}
		if known && !f.Newer(cur.f) {
			fs.settled(key, f)
			return nil
		}
		f.At = time.Now().UTC()
		var rev uint64
		var err error
		if known {
			rev, err = fs.kv.Update(ctx, key, f.Marshal(), cur.rev)
		} else {
			rev, err = fs.kv.Create(ctx, key, f.Marshal())
		}
		if err == nil {
			fs.mu.Lock()
			if rev > fs.seen[key].rev {
				fs.seen[key] = fenceEntry{f: f, rev: rev}
			}
			fs.mu.Unlock()
			fs.settled(key, f)
			return nil
		}
		last = err
		// Someone else wrote (or deleted) it: read what is there and decide again.
		if _, rerr := fs.read(ctx, key, f.StreamCreated); rerr != nil {
			return rerr
		}
	}
	return last
}

// settled drops key's pending value if it is still f.
func (fs *fenceSet) settled(key string, f topology.Fence) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if w, ok := fs.want[key]; ok && w.Seq == f.Seq && w.StreamCreated.Equal(f.StreamCreated) {
		delete(fs.want, key)
	}
}

// close stops the flusher and the watch without flushing.
func (fs *fenceSet) close() {
	select {
	case <-fs.stop:
	default:
		close(fs.stop)
	}
	_ = fs.w.Stop()
	fs.cancel()
}

// shutdown flushes what is pending (bounded by ctx) and closes.
func (fs *fenceSet) shutdown(ctx context.Context) {
	fs.close()
	select {
	case <-fs.done:
	case <-ctx.Done():
	}
	if ctx.Err() == nil {
		fs.flush(ctx, true)
	}
}

// fenceReadTimeout bounds a synchronous fence read.
const fenceReadTimeout = 5 * time.Second

// isFenced reports whether m is at or below the lane's fence: another
// replica (or this one, before a lost ack) already applied it. The fence
// comes from memory, or from the bucket when m is suspect.
func (l *lane) isFenced(ctx context.Context, m *Msg) (bool, error) {
	if m.fenced.Load() {
		return true, nil
	}
	if l.g.fence == nil || m.StreamSeq == 0 {
		return false, nil
	}
	seq := l.g.fence.current(l.fenceKey, l.created)
	if m.StreamSeq > seq && l.suspect(m) {
		rctx, cancel := context.WithTimeout(ctx, fenceReadTimeout)
		defer cancel()
		var err error
		if seq, err = l.g.fence.read(rctx, l.fenceKey, l.created); err != nil {
			return false, err
		}
	}
	if m.StreamSeq <= seq {
		m.fenced.Store(true)
		return true, nil
	}
	return false, nil
}

// suspect reports whether m may have been given to another replica while
// this one held it: it was held past the first InProgress (AckWait/3), or
// the connection dropped since it arrived. Another replica can get it only
// after AckWait and PinnedTTL without word from this one.
func (l *lane) suspect(m *Msg) bool {
	return time.Since(m.received) > l.g.cfg.Names.Config().AckWait/3 || l.g.reconnects() != m.reconnects
}

// fencedOnArrival checks a message before the handler sees it. After a
// reconnect (the watch may have missed updates) it reads the fence from the
// bucket once.
func (l *lane) fencedOnArrival(m *Msg) bool {
	if l.g.fence == nil {
		return false
	}
	if m.reconnects != l.synced {
		ctx, cancel := context.WithTimeout(l.ctx, fenceReadTimeout)
		_, err := l.g.fence.read(ctx, l.fenceKey, l.created)
		cancel()
		if err != nil {
			l.event(l.log.Warn(), m).Err(err).Msg("fence read after a reconnect failed; using the fence in memory")
		} else {
			l.synced = m.reconnects
		}
	}
	hit, _ := l.isFenced(l.ctx, m)
	return hit
}

// skipFenced acks a late duplicate without applying it.
func (l *lane) skipFenced(m *Msg, jm jetstream.Msg, where string) {
	if err := jm.Ack(); err != nil {
		l.log.Warn().Err(err).Uint64("seq", m.StreamSeq).Msg("ack of a fenced message failed")
	}
	l.mu.Lock()
	l.stats.Fenced++
	l.mu.Unlock()
	l.event(l.log.Info(), m).Uint64("fence", l.g.fence.current(l.fenceKey, l.created)).Str("at", where).
		Msg("late duplicate: another replica already applied this message; skipped")
}

// applied moves the lane's fence to m (written by the flusher). The first
// message applied under a new pin is written at once: a replica that lost
// the pin may still hold it. (Without a pin id — a consumer not pinned —
// every write is synchronous; that only happens while an older version
// turned the consumer back.)
func (l *lane) applied(m *Msg) {
	if l.g.fence == nil || m.StreamSeq == 0 {
		return
	}
	l.g.fence.advance(l.fenceKey, topology.Fence{Seq: m.StreamSeq, StreamCreated: l.created, Pin: m.pin})
	if m.pin != l.wrotePin || l.wrotePin == "" {
		ctx, cancel := context.WithTimeout(context.Background(), fenceReadTimeout)
		defer cancel()
		if err := l.g.fence.write(ctx, l.fenceKey, true); err != nil {
			l.event(l.log.Warn(), m).Err(err).Msg("fence write failed; the flusher retries")
			return
		}
		l.wrotePin = m.pin
	}
}
