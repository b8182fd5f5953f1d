package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/ingest"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

type harness struct {
	t     *testing.T
	srv   *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	names topology.Names
	svc   *ingest.Service
	url   string
}

func testCatalog(t testing.TB) *catalog.Catalog {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "catalog.yaml"))
	require.NoError(t, err)
	var cfg catalog.Config
	require.NoError(t, yaml.Unmarshal(b, &cfg))
	cat, err := catalog.Compile(cfg, os.DirFS(filepath.Join("testdata", "schemas")))
	require.NoError(t, err)
	return cat
}

// setup starts a server, ensures a fresh topology and starts ingest on a
// free port with cfg (HTTPAddr "off" disables HTTP; PublishTimeout 2s when
// zero).
func setup(t *testing.T, cfg ingest.Config) *harness {
	t.Helper()
	return setupLog(t, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
}

// setupLog is setup with the service logging to log.
func setupLog(t *testing.T, cfg ingest.Config, log zerolog.Logger) *harness {
	t.Helper()
	ctx := context.Background()
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(4))
	require.NoError(t, names.Ensure(ctx, js))
	switch cfg.HTTPAddr {
	case "":
		cfg.HTTPAddr = "127.0.0.1:0"
	case "off":
		cfg.HTTPAddr = ""
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = 2 * time.Second
	}
	svc, err := ingest.New(cfg, ingest.Deps{NC: nc, JS: js, Names: names, Catalog: testCatalog(t), Logger: log})
	require.NoError(t, err)
	require.NoError(t, svc.Start(ctx))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(sctx))
	})
	return &harness{t: t, srv: s, nc: nc, js: js, names: names, svc: svc, url: "http://" + svc.Addr()}
}

type reply struct {
	status int
	header http.Header
	body   ingest.Response
	raw    string
}

func (h *harness) post(contentType, token string, body io.Reader) reply {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url+"/v1/events", body)
	require.NoError(h.t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	require.Equal(h.t, "application/json", resp.Header.Get("Content-Type"), r.raw)
	require.NoError(h.t, json.Unmarshal(raw, &r.body), r.raw)
	return r
}

func (h *harness) postJSON(body string) reply {
	return h.post(ingest.MediaJSON, "", bytes.NewBufferString(body))
}

func (h *harness) postNDJSON(body string) reply {
	return h.post(ingest.MediaNDJSON, "", bytes.NewBufferString(body))
}

func (h *harness) stream() jetstream.Stream {
	h.t.Helper()
	st, err := h.js.Stream(context.Background(), h.names.EventsStream())
	require.NoError(h.t, err)
	return st
}

func (h *harness) count() uint64 {
	h.t.Helper()
	info, err := h.stream().Info(context.Background())
	require.NoError(h.t, err)
	return info.State.Msgs
}

// stored returns every message of the events stream in stream order.
func (h *harness) stored() []*jetstream.RawStreamMsg {
	h.t.Helper()
	st := h.stream()
	info, err := st.Info(context.Background())
	require.NoError(h.t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		require.NoError(h.t, err)
		out = append(out, m)
	}
	return out
}

func decodeStored(t *testing.T, m *jetstream.RawStreamMsg) *envelope.Envelope {
	t.Helper()
	e, err := envelope.Decode(m.Data)
	require.NoError(t, err)
	return e
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "requests", name))
	require.NoError(t, err)
	return string(b)
}
