package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/ingest"
	"sluice.dev/ingest/client"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/envelope"
)

// stub is an httptest ingest stand-in answering with the statuses queued.
type stub struct {
	mu       sync.Mutex
	statuses []int
	bodies   []string // request bodies
	auth     []string
	types    []string
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(b))
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	s.types = append(s.types, r.Header.Get("Content-Type"))
	status := http.StatusAccepted
	if len(s.statuses) > 0 {
		status, s.statuses = s.statuses[0], s.statuses[1:]
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch status {
	case http.StatusAccepted:
		e, err := envelope.Decode(b)
		if err != nil {
			http.Error(w, err.Error(), http.StatusTeapot)
			return
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"results": []map[string]any{
			{"index": 0, "id": e.ID, "key": e.Key, "stored": true, "stream_seq": 7, "duplicate": len(s.bodies) > 2}}})
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"events not stored: nats: timeout"}`))
	case http.StatusBadRequest:
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"invalid events","errors":[{"index":0,"id":"e1","field":"data.email","reason":"does not match pattern"}]}`))
	default:
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"missing or invalid bearer token"}`))
	}
}

func newStub(t *testing.T, statuses ...int) (*stub, *httptest.Server) {
	s := &stub{statuses: statuses}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func TestHTTPRetries503WithTheSameID(t *testing.T) {
	s, srv := newStub(t, http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusAccepted)
	c, err := client.New(client.Config{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		client.NewHTTP(srv.URL+"/", "s3cret-token-0123456789", srv.Client()))
	require.NoError(t, err)
	e := ev("customer:7")
	r, err := c.Publish(context.Background(), e)
	require.NoError(t, err)
	require.Equal(t, 3, r.Attempts)
	require.Equal(t, uint64(7), r.StreamSeq)
	require.Equal(t, e.ID, r.ID)
	require.Len(t, s.bodies, 3)
	for i := range s.bodies {
		require.Equal(t, s.bodies[0], s.bodies[i], "every attempt sends the same event, same id")
		require.Equal(t, "Bearer s3cret-token-0123456789", s.auth[i])
		require.Equal(t, "application/json", s.types[i])
	}
	got, err := envelope.Decode([]byte(s.bodies[0]))
	require.NoError(t, err)
	require.Equal(t, e.ID, got.ID)
}

func TestHTTPFinalErrors(t *testing.T) {
	tests := []struct {
		status int
		want   error
	}{
		{http.StatusBadRequest, client.ErrInvalid},
		{http.StatusUnauthorized, client.ErrRejected},
		{http.StatusRequestEntityTooLarge, client.ErrRejected},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			s, srv := newStub(t, tt.status)
			c, err := client.New(client.Config{MinBackoff: time.Millisecond}, client.NewHTTP(srv.URL, "", nil))
			require.NoError(t, err)
			_, err = c.Publish(context.Background(), ev("k"))
			require.ErrorIs(t, err, tt.want)
			require.Len(t, s.bodies, 1, "never retried")
			require.Empty(t, s.auth[0])
			var inv *client.InvalidError
			if tt.want == client.ErrInvalid {
				require.ErrorAs(t, err, &inv)
				require.Equal(t, []client.FieldError{{Index: 0, ID: "e1",
					FieldError: envelope.FieldError{Field: "data.email", Reason: "does not match pattern"}}}, inv.Fields)
			}
		})
	}
}

func TestHTTPUnavailableUntilContextEnds(t *testing.T) {
	statuses := make([]int, 10000)
	for i := range statuses {
		statuses[i] = http.StatusServiceUnavailable
	}
	s, srv := newStub(t, statuses...)
	c, err := client.New(client.Config{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}, client.NewHTTP(srv.URL, "", nil))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Publish(ctx, ev("k"))
	require.ErrorIs(t, err, client.ErrUnavailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "status 503")
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Greater(t, len(s.bodies), 1)
}

// TestHTTPAgainstIngest runs the client against the real ingest handler:
// server-side key derivation, a batch, a schema error with its field.
func TestHTTPAgainstIngest(t *testing.T) {
	h := setupJS(t)
	b, err := os.ReadFile(filepath.Join("..", "testdata", "catalog.yaml"))
	require.NoError(t, err)
	var ccfg catalog.Config
	require.NoError(t, yaml.Unmarshal(b, &ccfg))
	cat, err := catalog.Compile(ccfg, os.DirFS(filepath.Join("..", "testdata", "schemas")))
	require.NoError(t, err)
	svc, err := ingest.New(ingest.Config{HTTPAddr: "", PublishTimeout: 2 * time.Second},
		ingest.Deps{NC: h.js.Conn(), JS: h.js, Names: h.names, Catalog: cat, Logger: zerolog.Nop()})
	require.NoError(t, err)
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)

	c, err := client.New(client.Config{Source: "site", DeriveKey: true}, client.NewHTTP(srv.URL, "", srv.Client()))
	require.NoError(t, err)
	ctx := context.Background()
	r, err := c.Publish(ctx, &envelope.Envelope{Type: "signup", Data: []byte(`{"user_id":7,"email":"a@b.c"}`)})
	require.NoError(t, err)
	require.Equal(t, "user:7", r.Key, "derived by the server")
	require.NotZero(t, r.StreamSeq)

	batch := []*envelope.Envelope{ev("n1"), ev("n2"), ev("n1")}
	rs, err := c.PublishBatch(ctx, batch)
	require.NoError(t, err)
	require.Len(t, rs, 3)
	require.Less(t, rs[0].StreamSeq, rs[2].StreamSeq, "order kept per key")

	again, err := c.Publish(ctx, batch[1]) // same id: a duplicate, stored once
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, rs[1].StreamSeq, again.StreamSeq)

	_, err = c.Publish(ctx, &envelope.Envelope{Type: "signup", Data: []byte(`{"user_id":8,"email":"nope"}`)})
	var inv *client.InvalidError
	require.ErrorAs(t, err, &inv)
	require.Equal(t, "data.email", inv.Fields[0].Field)
}

func FuzzDecodeReply(f *testing.F) {
	f.Add(202, "", []byte(`{"results":[{"index":0,"id":"a","key":"k","stored":true,"stream_seq":1}]}`), 1)
	f.Add(400, "", []byte(`{"error":"invalid events","errors":[{"index":0,"line":3,"id":"x","field":"data","reason":"r"}]}`), 1)
	f.Add(400, "", []byte(`not json`), 2)
	f.Add(503, "1", []byte(`{"error":"x","results":[]}`), 1)
	f.Add(503, "-5", []byte(``), 1)
	f.Add(401, "", []byte(`{"error":"no"}`), 1)
	f.Add(202, "", []byte(`{"results":[]}`), 1)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte, n int) {
		rs, err := client.DecodeReply(status, retryAfter, body, n)
		if err == nil {
			require.Len(t, rs, n)
		} else {
			require.Nil(t, rs)
		}
	})
}
