package dispatcher

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
)

// The id cache answers repeated lookups without reading the bucket, and
// every change made by someone else (an operator's crm-ids set/remove,
// another replica) reaches it through the watch.
func TestIDCacheFollowsChangesMadeElsewhere(t *testing.T) {
	s := meshtest.RunServer(t, t.TempDir())
	_, js := meshtest.Connect(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ids_cache"})
	require.NoError(t, err)
	store := &idStore{js: js, bucket: "ids_cache"}
	require.NoError(t, store.startCache(ctx, zerolog.Nop()))
	defer store.stopCache()
	lookup := func() (string, bool) {
		id, found, err := store.lookup(ctx, "contacts", "customer:1")
		require.NoError(t, err)
		return id, found
	}
	key := kvKey("contacts", "customer:1")

	// Its own write is cached: no read.
	require.NoError(t, store.store(ctx, "ev-1", "contacts", "customer:1", "crm-1"))
	for range 3 {
		id, found := lookup()
		require.True(t, found)
		require.Equal(t, "crm-1", id)
	}
	require.Zero(t, store.reads.Load(), "answered from the cache")

	// Set elsewhere: seen through the watch, without a read.
	_, err = b.Put(ctx, key, []byte("crm-2"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { id, _ := lookup(); return id == "crm-2" }, 5*time.Second, time.Millisecond)
	require.Zero(t, store.reads.Load())

	// Removed elsewhere: the next lookups read the bucket and find none.
	require.NoError(t, b.Delete(ctx, key))
	require.Eventually(t, func() bool { _, found := lookup(); return !found }, 5*time.Second, time.Millisecond)
	reads := store.reads.Load()
	require.Positive(t, reads)
	_, found := lookup()
	require.False(t, found)
	require.Equal(t, reads+1, store.reads.Load(), "a missing id is not cached")

	// Created by another replica: read once, then cached.
	_, err = b.Put(ctx, key, []byte("crm-3"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { id, _ := lookup(); return id == "crm-3" }, 5*time.Second, time.Millisecond)
	reads = store.reads.Load()
	id, found := lookup()
	require.True(t, found)
	require.Equal(t, "crm-3", id)
	require.Equal(t, reads, store.reads.Load())

	// Stopped: every lookup reads the bucket again.
	store.stopCache()
	id, found = lookup()
	require.True(t, found)
	require.Equal(t, "crm-3", id)
	require.Equal(t, reads+1, store.reads.Load())
}

// A value read from the leader never replaces a later change the watch
// already brought (the read raced with the change), a delete marks the
// key, entries expire after idCacheTTL, and a reconnect empties the cache.
func TestIDCacheKeepsTheLatestRevision(t *testing.T) {
	now := time.Unix(1000, 0)
	c := &idCache{on: true, entries: map[string]idCached{}, now: func() time.Time { return now }}
	c.putLocked("k", "new", 7)
	c.put("k", "old", 5, 0) // a read that started before revision 7
	id, ok := c.get("k", 0)
	require.True(t, ok)
	require.Equal(t, "new", id)

	c.putLocked("k", "", 9) // deleted at 9
	_, ok = c.get("k", 0)
	require.False(t, ok, "deleted: read the leader")
	c.put("k", "new", 7, 0) // a read that began before the delete
	_, ok = c.get("k", 0)
	require.False(t, ok)
	c.put("k", "again", 10, 0) // re-created
	id, ok = c.get("k", 0)
	require.True(t, ok)
	require.Equal(t, "again", id)

	now = now.Add(idCacheTTL + time.Millisecond)
	_, ok = c.get("k", 0)
	require.False(t, ok, "expired")
	c.put("k", "again", 10, 0) // read again at the same revision: fresh
	_, ok = c.get("k", 0)
	require.True(t, ok)

	_, ok = c.get("k", 1)
	require.False(t, ok, "a reconnect drops the cache")
	c.put("k", "again", 10, 0) // read before the reconnect
	_, ok = c.get("k", 1)
	require.False(t, ok)
}
