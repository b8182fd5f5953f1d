package client_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/ingest/client"
	"sluice.dev/mesh/envelope"
)

// fakeTransport records sends; block, when set, holds each send until the
// test receives from it; fail makes the first fail sends return errFake.
type fakeTransport struct {
	mu       sync.Mutex
	sent     []string // ids, in send order
	inFlight map[string]int
	maxPer   int
	block    chan string
	fail     int
	err      error
}

var errFake = errors.New("fake: connection refused")

func (f *fakeTransport) Send(ctx context.Context, evs []*envelope.Envelope) ([]client.Result, error) {
	f.mu.Lock()
	if f.inFlight == nil {
		f.inFlight = map[string]int{}
	}
	for _, ev := range evs {
		f.sent = append(f.sent, ev.ID)
		f.inFlight[ev.Key]++
		f.maxPer = max(f.maxPer, f.inFlight[ev.Key])
	}
	fail := f.fail > 0
	f.fail--
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		for _, ev := range evs {
			f.inFlight[ev.Key]--
		}
		f.mu.Unlock()
	}()
	if f.block != nil {
		select {
		case f.block <- evs[0].ID:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.err != nil {
		return nil, f.err
	}
	if fail {
		return nil, errFake
	}
	rs := make([]client.Result, len(evs))
	for i, ev := range evs {
		rs[i] = client.Result{ID: ev.ID, Key: ev.Key, StreamSeq: uint64(i + 1)}
	}
	return rs, nil
}

func (f *fakeTransport) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

func ev(key string) *envelope.Envelope {
	return &envelope.Envelope{Type: "note", Key: key, Data: []byte(`{"text":"hi"}`)}
}

func TestPublishFillsInAndChecks(t *testing.T) {
	tests := []struct {
		name   string
		derive bool
		ev     *envelope.Envelope
		fields []string // expected invalid fields; nil: valid
	}{
		{name: "complete", ev: ev("k1")},
		{name: "no key", ev: ev(""), fields: []string{"key"}},
		{name: "no key, derived by the server", derive: true, ev: ev("")},
		{name: "bad type and data", ev: &envelope.Envelope{Type: "a.b", Key: "k", Data: []byte(`[1]`)}, fields: []string{"type", "data"}},
		{name: "no data", ev: &envelope.Envelope{Type: "note", Key: "k"}, fields: []string{"data"}},
		{name: "data not JSON", ev: &envelope.Envelope{Type: "note", Key: "k", Data: []byte(`{"x":`)}, fields: []string{"data"}},
		{name: "bad id", ev: &envelope.Envelope{ID: "has space", Type: "note", Key: "k", Data: []byte(`{}`)}, fields: []string{"id"}},
		{name: "control character in key", ev: ev("a\nb"), fields: []string{"key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &fakeTransport{}
			var c *client.Client
			var err error
			if tt.derive {
				c, err = client.New(client.Config{Source: "web", DeriveKey: true}, &derivingTransport{tr})
			} else {
				c, err = client.New(client.Config{Source: "web"}, tr)
			}
			require.NoError(t, err)
			r, err := c.Publish(context.Background(), tt.ev)
			if tt.fields == nil {
				require.NoError(t, err)
				require.Equal(t, tt.ev.ID, r.ID)
				require.True(t, envelope.ValidID(tt.ev.ID))
				require.Equal(t, "web", tt.ev.Source)
				require.WithinDuration(t, time.Now(), tt.ev.OccurredAt, time.Minute)
				require.Equal(t, 1, r.Attempts)
				return
			}
			require.ErrorIs(t, err, client.ErrInvalid)
			require.ErrorIs(t, err, envelope.ErrInvalid)
			var inv *client.InvalidError
			require.ErrorAs(t, err, &inv)
			var got []string
			for _, f := range inv.Fields {
				got = append(got, f.Field)
			}
			require.Equal(t, tt.fields, got)
			require.Empty(t, tr.ids(), "an invalid event is never sent")
		})
	}
}

// derivingTransport is a fake that claims server-side key derivation.
type derivingTransport struct{ *fakeTransport }

func (derivingTransport) DerivesKeys() bool { return true }

func TestConfig(t *testing.T) {
	_, err := client.New(client.Config{DeriveKey: true}, &fakeTransport{})
	require.ErrorContains(t, err, "client.derive_key")
	_, err = client.New(client.Config{MaxAttempts: -1}, &fakeTransport{})
	require.ErrorContains(t, err, "client.max_attempts")
	_, err = client.New(client.Config{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, &fakeTransport{})
	require.ErrorContains(t, err, "client.max_backoff")
	_, err = client.New(client.Config{}, nil)
	require.Error(t, err)
	_, err = client.New(client.Config{DeriveKey: true}, client.NewHTTP("http://x", "", nil))
	require.NoError(t, err)
}

// TestKeyOrderFIFO: while a key's event is in flight, later callers of the
// same key queue in call order; another key is not held up.
func TestKeyOrderFIFO(t *testing.T) {
	tr := &fakeTransport{block: make(chan string)}
	c, err := client.New(client.Config{}, tr)
	require.NoError(t, err)
	ctx := context.Background()
	var wg sync.WaitGroup
	publish := func(e *envelope.Envelope) {
		wg.Go(func() {
			_, err := c.Publish(ctx, e)
			require.NoError(t, err)
		})
	}
	first := ev("k")
	first.ID = "1"
	publish(first)
	require.Eventually(t, func() bool { return len(tr.ids()) == 1 }, 5*time.Second, time.Millisecond)
	for i, id := range []string{"2", "3", "4"} {
		e := ev("k")
		e.ID = id
		publish(e)
		require.Eventually(t, func() bool { return client.Waiting(c, "k") == i+1 }, 5*time.Second, time.Millisecond)
	}
	other := ev("other")
	other.ID = "x"
	publish(other)
	require.Eventually(t, func() bool { return len(tr.ids()) == 2 }, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{"1", "x"}, tr.ids(), "another key proceeds while k is in flight")
	for range 5 {
		<-tr.block
	}
	wg.Wait()
	require.Equal(t, []string{"1", "x", "2", "3", "4"}, tr.ids())
	require.Equal(t, 1, tr.maxPer, "never two events of a key in flight")
	require.Zero(t, client.LockedKeys(c))
}

func TestWaitingForKeyHonoursContext(t *testing.T) {
	tr := &fakeTransport{block: make(chan string)}
	c, err := client.New(client.Config{}, tr)
	require.NoError(t, err)
	go func() { _, _ = c.Publish(context.Background(), ev("k")) }()
	require.Eventually(t, func() bool { return len(tr.ids()) == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = c.Publish(ctx, ev("k"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Zero(t, client.Waiting(c, "k"))
	<-tr.block
	require.Eventually(t, func() bool { return client.LockedKeys(c) == 0 }, 5*time.Second, time.Millisecond)
	require.Len(t, tr.ids(), 1)
}

func TestRetryKeepsTheID(t *testing.T) {
	tr := &fakeTransport{fail: 2}
	c, err := client.New(client.Config{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}, tr)
	require.NoError(t, err)
	e := ev("k")
	r, err := c.Publish(context.Background(), e)
	require.NoError(t, err)
	require.Equal(t, 3, r.Attempts)
	require.Equal(t, []string{e.ID, e.ID, e.ID}, tr.ids())
}

func TestGivesUp(t *testing.T) {
	t.Run("max attempts", func(t *testing.T) {
		tr := &fakeTransport{fail: 100}
		c, err := client.New(client.Config{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxAttempts: 3}, tr)
		require.NoError(t, err)
		_, err = c.Publish(context.Background(), ev("k"))
		require.ErrorIs(t, err, client.ErrUnavailable)
		require.ErrorIs(t, err, errFake)
		var ue *client.UnavailableError
		require.ErrorAs(t, err, &ue)
		require.Equal(t, 3, ue.Attempts)
		require.Len(t, tr.ids(), 3)
	})
	t.Run("context", func(t *testing.T) {
		tr := &fakeTransport{fail: 1 << 30}
		c, err := client.New(client.Config{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}, tr)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		_, err = c.Publish(ctx, ev("k"))
		require.ErrorIs(t, err, client.ErrUnavailable)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Greater(t, len(tr.ids()), 1)
	})
	t.Run("rejected is final", func(t *testing.T) {
		tr := &fakeTransport{err: client.ErrRejected}
		c, err := client.New(client.Config{}, tr)
		require.NoError(t, err)
		_, err = c.Publish(context.Background(), ev("k"))
		require.ErrorIs(t, err, client.ErrRejected)
		require.Len(t, tr.ids(), 1)
	})
}

func TestBatchDuplicateIDs(t *testing.T) {
	c, err := client.New(client.Config{}, &fakeTransport{})
	require.NoError(t, err)
	a, b := ev("k"), ev("j")
	a.ID, b.ID = "same", "same"
	_, err = c.PublishBatch(context.Background(), []*envelope.Envelope{a, b})
	var inv *client.InvalidError
	require.ErrorAs(t, err, &inv)
	require.Equal(t, 1, inv.Fields[0].Index)
	require.Equal(t, "id", inv.Fields[0].Field)
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	var ids []string
	for range 2000 {
		id := client.NewID()
		require.Len(t, id, 26)
		require.True(t, envelope.ValidID(id))
		require.False(t, seen[id])
		seen[id] = true
		ids = append(ids, id)
	}
	a := client.NewID()
	time.Sleep(2 * time.Millisecond) // ids order by millisecond
	b := client.NewID()
	require.Less(t, a, b)
	require.True(t, sort.SliceIsSorted(ids, func(i, j int) bool { return ids[i][:10] < ids[j][:10] }), "time prefix never decreases")
}
