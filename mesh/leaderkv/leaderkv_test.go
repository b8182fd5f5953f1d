package leaderkv_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"sluice.dev/mesh/leaderkv"
	"sluice.dev/mesh/meshtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A get through the stream API sees the latest put, its revision, and no
// value after a delete or a purge.
func TestGetReadsTheLatestValue(t *testing.T) {
	s := meshtest.RunServer(t, t.TempDir())
	_, js := meshtest.Connect(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leader_read"})
	require.NoError(t, err)
	kv := leaderkv.Wrap(b, js)
	require.IsType(t, leaderkv.KV{}, kv)

	_, err = kv.Get(ctx, "a")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	_, err = kv.Put(ctx, "a", []byte("1"))
	require.NoError(t, err)
	rev, err := kv.Put(ctx, "a", []byte("2"))
	require.NoError(t, err)
	e, err := kv.Get(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, "2", string(e.Value()))
	require.Equal(t, rev, e.Revision())
	require.Equal(t, "a", e.Key())

	require.NoError(t, kv.Delete(ctx, "a"))
	_, err = kv.Get(ctx, "a")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	_, err = kv.Put(ctx, "b", []byte("1"))
	require.NoError(t, err)
	require.NoError(t, kv.Purge(ctx, "b"))
	_, err = kv.Get(ctx, "b")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)

	// Anything that cannot say its connection is left as it is.
	require.Equal(t, b, leaderkv.Wrap(b, struct{}{}))
}
