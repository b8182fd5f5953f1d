package loadgen_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/loadgen"
	"sluice.dev/mesh/envelope"
)

// ingestStub records the NDJSON batches it accepts; answer decides the
// status of each request (by request number and the batch's ids).
type ingestStub struct {
	mu       sync.Mutex
	requests int
	accepted []string
	refused  [][]string
	maxBatch int
	answer   func(n int, ids []string) int
	hdr      http.Header
}

func (s *ingestStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != loadgen.EventsPath ||
		r.Header.Get("Content-Type") != "application/x-ndjson" {
		http.Error(w, "bad request line", http.StatusBadRequest)
		return
	}
	var ids []string
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		env, err := envelope.Decode(sc.Bytes())
		if err != nil || env.Check() != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		ids = append(ids, env.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.hdr = r.Header.Clone()
	s.maxBatch = max(s.maxBatch, len(ids))
	st := s.answer(s.requests, ids)
	if st/100 == 2 {
		s.accepted = append(s.accepted, ids...)
	} else {
		s.refused = append(s.refused, ids)
		w.Header().Set("Retry-After", "0")
	}
	w.WriteHeader(st)
	if st/100 == 2 { // like ingest: the first id of each batch is reported as a duplicate
		_, _ = w.Write([]byte(`{"results":[{"index":0,"duplicate":true}` +
			strings.Repeat(`,{"duplicate":false}`, len(ids)-1) + `]}`))
	}
}

func TestPublishHTTPRetries503WithTheSameIDs(t *testing.T) {
	stub := &ingestStub{answer: func(n int, _ []string) int {
		if n%4 == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusAccepted
	}}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	p := plan(t, loadgen.PlanConfig{Events: 1500, Seed: 3})

	res, err := loadgen.PublishHTTP(context.Background(), srv.URL+"/", p.Events, loadgen.PublishOptions{
		Concurrency: 4, BatchSize: 50, RetryWait: time.Millisecond, Header: http.Header{"Authorization": {"Bearer t"}}})
	require.NoError(t, err)
	require.Equal(t, 1500, res.Published)
	require.Zero(t, res.Failed)
	require.Equal(t, stub.requests-len(stub.refused), res.Duplicates)
	require.Equal(t, stub.requests, res.Requests)
	require.Equal(t, len(stub.refused), res.Retries)
	require.NotEmpty(t, stub.refused)
	require.LessOrEqual(t, stub.maxBatch, 50)
	require.Equal(t, "Bearer t", stub.hdr.Get("Authorization"))
	requirePerKeyOrder(t, p, stub.accepted) // also: each id accepted exactly once

	// every refused batch was resent whole, with the same ids
	pos := map[string]int{}
	for i, id := range stub.accepted {
		pos[id] = i
	}
	for _, ids := range stub.refused {
		for i := 1; i < len(ids); i++ {
			require.Equal(t, pos[ids[i-1]]+1, pos[ids[i]], "refused batch %v resent as one batch", ids)
		}
	}
}

func TestPublishHTTPRejectionStopsTheBatchKeys(t *testing.T) {
	p := plan(t, loadgen.PlanConfig{Events: 400, Seed: 8})
	var bad *envelope.Envelope
	for _, ev := range p.Events {
		if len(p.Expected()[ev.Key]) >= seqOf(ev.ID)+2 {
			bad = ev
			break
		}
	}
	stub := &ingestStub{answer: func(_ int, ids []string) int {
		for _, id := range ids {
			if id == bad.ID {
				return http.StatusBadRequest
			}
		}
		return http.StatusOK
	}}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	res, err := loadgen.PublishHTTP(context.Background(), srv.URL, p.Events, loadgen.PublishOptions{BatchSize: 10})
	require.ErrorIs(t, err, loadgen.ErrRejected)
	require.ErrorContains(t, err, "HTTP 400")
	require.Len(t, stub.refused, 1, "a 4xx is not retried")
	stopped := map[string]bool{}
	for _, id := range stub.refused[0] {
		stopped[id[:lastHash(id)]] = true
	}
	require.True(t, stopped[bad.Key])
	for _, id := range stub.accepted {
		key := id[:lastHash(id)]
		if stopped[key] {
			for _, r := range stub.refused[0] {
				if r[:lastHash(r)] == key {
					require.Less(t, seqOf(id), seqOf(r), "%s accepted after its key was stopped", id)
				}
			}
		}
	}
	require.Equal(t, len(stub.accepted), res.Published)
	require.Equal(t, 400, res.Published+res.Failed)
	require.Positive(t, res.Failed)
}

func lastHash(id string) int {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '#' {
			return i
		}
	}
	return -1
}

func TestPublishHTTPHonoursContext(t *testing.T) {
	stub := &ingestStub{answer: func(int, []string) int { return http.StatusServiceUnavailable }}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	p := plan(t, loadgen.PlanConfig{Events: 50})
	res, err := loadgen.PublishHTTP(ctx, srv.URL, p.Events, loadgen.PublishOptions{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(t0), 3*time.Second)
	require.Zero(t, res.Published)
	require.Equal(t, 50, res.Failed)
	require.Greater(t, res.Retries, 0)

	// unreachable server with a bound on attempts
	srv2 := httptest.NewServer(http.NotFoundHandler())
	url := srv2.URL
	srv2.Close()
	res, err = loadgen.PublishHTTP(context.Background(), url, p.Events[:5],
		loadgen.PublishOptions{MaxAttempts: 2, RetryWait: time.Millisecond})
	require.ErrorIs(t, err, loadgen.ErrGaveUp)
	require.Equal(t, 5, res.Failed)
}
