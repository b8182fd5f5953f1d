package crmsim_test

import (
	"context"
	"fmt"
	"github.com/rs/zerolog"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"sluice.dev/crmsim"
)

// nopWriter is a ResponseWriter that allocates nothing, so the benchmark
// shows the sim's own allocations.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func BenchmarkHandler(b *testing.B) {
	for _, method := range []string{"POST", "PATCH"} {
		b.Run(method, func(b *testing.B) {
			s, err := crmsim.New(crmsim.Config{RecordCapacity: b.N + 1}, nopLogger)
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			r, _ := http.NewRequest("POST", "/api/contacts", nil)
			h.ServeHTTP(&nopWriter{h: http.Header{}}, r)
			r, _ = http.NewRequest(method, "/api/contacts", http.NoBody)
			if method == "PATCH" {
				r, _ = http.NewRequest(method, "/api/contacts/contacts-1", http.NoBody)
			}
			r.Header.Set("X-Sluice-Event-Id", "customer:1#1")
			r.Header.Set("X-Sluice-Key", "customer:1")
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				h.ServeHTTP(w, r)
			}
		})
	}
}

// BenchmarkHTTP measures requests/s through a real listener with 16
// keep-alive clients (client and sim share the machine).
func BenchmarkHTTP(b *testing.B) {
	s, err := crmsim.New(crmsim.Config{RecordCapacity: b.N + 1}, nopLogger)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Stop(context.Background())
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	var n atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; n.Add(1) <= int64(b.N); i++ {
				id := fmt.Sprintf("k%d#%d", w, i)
				r, _ := http.NewRequest("POST", s.URL()+"/api/contacts", strings.NewReader(`{"name":"x"}`))
				r.Header.Set("Idempotency-Key", id)
				r.Header.Set("X-Sluice-Event-Id", id)
				resp, err := client.Do(r)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if rep := s.SelfCheck(); !rep.OK() {
		b.Fatal(rep.String())
	}
}

var nopLogger = zerolog.Nop()
