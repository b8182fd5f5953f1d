package dispatcher

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/leaderkv"
	"sluice.dev/mesh/meshtest"
)

func TestLeaderKVReadsWhatWasPut(t *testing.T) {
	s := meshtest.RunServer(t, t.TempDir())
	nc, js := meshtest.Connect(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ids_leader_read"})
	require.NoError(t, err)
	store := &idStore{js: js, bucket: "ids_leader_read"}
	kv, err := store.open(ctx)
	require.NoError(t, err)
	require.IsType(t, leaderkv.KV{}, kv, "the id store must not read through direct gets")

	key := kvKey("contacts", "customer:1")
	_, found, err := store.lookup(ctx, "contacts", "customer:1")
	require.NoError(t, err)
	require.False(t, found)

	_, err = b.Put(ctx, key, []byte("crm-1"))
	require.NoError(t, err)
	rev, err := b.Put(ctx, key, []byte("crm-2"))
	require.NoError(t, err)
	e, err := kv.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, "crm-2", string(e.Value()), "the latest value")
	require.Equal(t, rev, e.Revision())
	id, found, err := store.lookup(ctx, "contacts", "customer:1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, "crm-2", id)

	require.NoError(t, b.Delete(ctx, key))
	_, found, err = store.lookup(ctx, "contacts", "customer:1")
	require.NoError(t, err)
	require.False(t, found, "a deleted key has no id")
	require.NoError(t, store.store(ctx, "ev-1", "contacts", "customer:1", "crm-3"))
	id, found, err = store.lookup(ctx, "contacts", "customer:1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, "crm-3", id)
	require.True(t, nc.IsConnected())
}
