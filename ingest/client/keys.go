package client

import (
	"context"
	"sync"
)

// keyLocks serializes publishes per key: a key's next publish starts only
// after the previous one returned (acked, or failed for good). Waiters are
// served first come, first served, so concurrent callers are stored in the
// order they called. Entries are removed as soon as a key is idle.
type keyLocks struct {
	mu   sync.Mutex
	keys map[string]*keyLock
}

type keyLock struct {
	waiters []chan struct{} // FIFO; closed when the lock is handed over
}

func newKeyLocks() *keyLocks { return &keyLocks{keys: map[string]*keyLock{}} }

// lock takes key, waiting behind earlier callers until ctx ends.
func (k *keyLocks) lock(ctx context.Context, key string) error {
	k.mu.Lock()
	l, busy := k.keys[key]
	if !busy {
		k.keys[key] = &keyLock{}
		k.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	k.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	k.mu.Lock()
	for i, w := range l.waiters {
		if w == ch { // still queued: leave the queue
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			k.mu.Unlock()
			return ctx.Err()
		}
	}
	k.mu.Unlock()
	// The lock was handed to us while ctx ended: pass it on.
	k.unlock(key)
	return ctx.Err()
}

// unlock hands key to the next waiter, or forgets it.
func (k *keyLocks) unlock(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.keys[key]
	if len(l.waiters) == 0 {
		delete(k.keys, key)
		return
	}
	next := l.waiters[0]
	l.waiters = l.waiters[1:]
	close(next)
}

// lockAll takes every key of keys (sorted and distinct, so two batches
// never deadlock), or none when ctx ends.
func (k *keyLocks) lockAll(ctx context.Context, keys []string) error {
	for i, key := range keys {
		if err := k.lock(ctx, key); err != nil {
			k.unlockAll(keys[:i])
			return err
		}
	}
	return nil
}

func (k *keyLocks) unlockAll(keys []string) {
	for _, key := range keys {
		k.unlock(key)
	}
}

// size is the number of keys locked or waited for.
func (k *keyLocks) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.keys)
}
