package app

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/metrics"
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
