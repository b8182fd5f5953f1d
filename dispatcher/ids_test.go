package dispatcher

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
)

// flakyKV fails the first failPuts Puts.
type flakyKV struct {
	failPuts int
	puts     map[string]string
}

func (k *flakyKV) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

func (k *flakyKV) Put(_ context.Context, key string, v []byte) (uint64, error) {
	if k.failPuts > 0 {
		k.failPuts--
		return 0, errors.New("no responders")
	}
	k.puts[key] = string(v)
	return 1, nil
}

// A create the CRM accepted is not sent again when only storing its id
// failed: the retry stores the remembered id.
func TestCreateRetriesOnlyTheIDStore(t *testing.T) {
	var calls atomic.Int32
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"id":"c-1"}`))
	}))
	defer crm.Close()
	cfg := Config{CRM: CRMConfig{URL: crm.URL}}.WithDefaults()
	store := &flakyKV{failPuts: 2, puts: map[string]string{}}
	s := &Service{cfg: cfg, log: zerolog.Nop(), crm: newCRMClient(cfg.CRM, nil, 2), ids: &idStore{kv: store}}
	defer s.crm.close()
	for _, mode := range []string{"create", "upsert"} {
		calls.Store(0)
		store.failPuts = 2
		m := &lane.Msg{Data: []byte(`{"event_id":"e-` + mode + `","type":"t","key":"k","object":"contacts","mode":"` + mode +
			`","path":"/c","update_path":"/c/{crm_id}","body":{}}`)}
		for i := 0; i < 2; i++ {
			o := s.handle(context.Background(), m)
			require.Equal(t, lane.KindRetry, o.Kind, mode)
			require.ErrorIs(t, o.Err, ErrIDStore)
			m.Failures++
		}
		require.Equal(t, lane.KindDone, s.handle(context.Background(), m).Kind, mode)
		require.Equal(t, int32(1), calls.Load(), "%s sent once", mode)
		require.Equal(t, "c-1", store.puts[kvKey("contacts", "k")])
		_, pending := s.ids.pendingID("e-" + mode)
		require.False(t, pending)
	}
	require.Equal(t, uint64(2), s.Delivered())
}
