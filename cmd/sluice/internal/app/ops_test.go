package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
	"sluice.dev/ingest"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/service"
	"sluice.dev/mesh/topology"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestOpsEndpoints(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(1))
	m := metrics.New()
	o := newOpsServer("127.0.0.1:0", nc, js, names.EventsStream(), m, zerolog.Nop())
	h := o.handler()

	code, body := get(t, h, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, "no events stream yet")
	require.Contains(t, body, names.EventsStream())

	require.NoError(t, names.Ensure(context.Background(), js))
	code, body = get(t, h, "/readyz")
	require.Equal(t, http.StatusOK, code, body)

	code, body = get(t, h, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "sluice_produce_to_crm_seconds_count 0")

	s.Shutdown()
	require.Eventually(t, func() bool {
		code, _ := get(t, h, "/readyz")
		return code == http.StatusServiceUnavailable
	}, 5*time.Second, 20*time.Millisecond)
	code, _ = get(t, h, "/healthz")
	require.Equal(t, http.StatusOK, code)
}

func TestOpsListener(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	o := newOpsServer("127.0.0.1:0", nc, js, "NONE", metrics.New(), zerolog.Nop())
	require.NoError(t, o.Start(context.Background()))
	t.Cleanup(func() { _ = o.Stop(context.Background()) })
	resp, err := http.Get("http://" + o.Addr() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Post("http://"+o.Addr()+"/metrics", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestOpsPprofIsOptIn(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	for _, on := range []bool{false, true} {
		o := newOpsServer("127.0.0.1:0", nc, js, "NONE", metrics.New(), zerolog.Nop())
		o.pprof = on
		code, _ := get(t, o.handler(), "/debug/pprof/")
		if on {
			require.Equal(t, http.StatusOK, code, "ops.pprof: true serves the profiler")
		} else {
			require.Equal(t, http.StatusNotFound, code, "the profiler is off by default")
		}
	}
}

// A client that sends its body one byte every 2s is cut off by the ops
// listener's read timeout (the hardened server config every Sluice
// listener shares), not served for as long as it likes.
func TestOpsListenerCutsSlowBody(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(1))
	o := newOpsServer("127.0.0.1:0", nc, js, names.EventsStream(), metrics.New(), zerolog.Nop())
	require.Equal(t, service.DefaultReadTimeout, o.http.WithDefaults().ReadTimeout, "the ops listener uses the shared defaults")
	// The page reads request bodies (its action endpoints); a shorter read
	// timeout keeps the test short.
	o.http.ReadTimeout = 3 * time.Second
	o.page = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	})
	require.NoError(t, o.Start(context.Background()))
	t.Cleanup(func() { _ = o.Stop(context.Background()) })

	conn, err := net.Dial("tcp", o.Addr())
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	_, err = fmt.Fprintf(conn, "POST /api/action HTTP/1.1\r\nHost: ops\r\nContent-Length: 1000\r\n\r\n")
	require.NoError(t, err)
	writeErr := make(chan error, 1)
	go func() {
		for {
			if _, err := conn.Write([]byte("x")); err != nil {
				writeErr <- err
				return
			}
			time.Sleep(2 * time.Second)
		}
	}()
	// Without a read timeout the body would take 2000s; the test gives up
	// after 20s.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
	_, err = io.Copy(io.Discard, conn)
	took := time.Since(start)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server did not close the slow request within 20s")
	require.Less(t, took, o.http.ReadTimeout+5*time.Second, "closed within the read timeout (plus scheduling slack)")
	require.GreaterOrEqual(t, took, o.http.ReadTimeout-500*time.Millisecond)
}

// Every Sluice listener (ingest, inbound, ops) runs the one hardened server
// config: the same header, read, write and idle timeouts and header cap.
func TestListenersShareOneServerConfig(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(1))
	cat, err := loadCatalog(catalog.Config{})
	require.NoError(t, err)
	in, err := ingest.New(ingest.Config{HTTPAddr: "127.0.0.1:0"}, ingest.Deps{NC: nc, JS: js, Names: names, Catalog: cat})
	require.NoError(t, err)
	db, err := productdb.Open(context.Background(), productdb.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "in.db")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	wh, err := inbound.New(inbound.Config{HTTPAddr: "127.0.0.1:0", DB: productdb.Config{Driver: "sqlite", DSN: "x"},
		Sources: []inbound.Source{{Secrets: []string{"whsec_b2xkLXNlY3JldA=="}}}},
		inbound.Deps{NC: nc, JS: js, Names: names, DB: db})
	require.NoError(t, err)
	ops := newOpsServer("127.0.0.1:0", nc, js, names.EventsStream(), metrics.New(), zerolog.Nop()).http.WithDefaults()

	timeouts := func(c service.HTTPConfig) []any {
		return []any{c.ReadHeaderTimeout, c.ReadTimeout, c.WriteTimeout, c.IdleTimeout, c.MaxHeaderBytes}
	}
	require.Equal(t, timeouts(in.HTTPConfig()), timeouts(wh.HTTPConfig()), "inbound has ingest's timeouts")
	require.Equal(t, timeouts(in.HTTPConfig()), timeouts(ops), "the ops listener has ingest's timeouts")
	for _, d := range timeouts(wh.HTTPConfig()) {
		require.NotZero(t, d)
	}
	// The body limit is each service's own.
	require.Equal(t, int64(1<<20), wh.HTTPConfig().MaxBodyBytes)
}
