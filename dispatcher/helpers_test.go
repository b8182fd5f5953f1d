package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// call is one request the fake CRM received.
type call struct {
	At     time.Time
	Method string
	URI    string
	Header http.Header
	Body   []byte
}

// reply is the fake CRM's answer.
type reply struct {
	Status int
	Header map[string]string
	Body   string
}

// fakeCRM is an httptest CRM that logs every request and answers with
// answer(c, n), n being the number of earlier requests with the same
// Idempotency-Key.
type fakeCRM struct {
	srv *httptest.Server

	mu     sync.Mutex
	calls  []call
	tries  map[string]int
	answer func(c call, n int) reply
}

func newFakeCRM(t *testing.T, answer func(c call, n int) reply) *fakeCRM {
	f := &fakeCRM{tries: map[string]int{}, answer: answer}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func ok200(call, int) reply { return reply{Status: 200, Body: `{"ok":true}`} }

func (f *fakeCRM) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c := call{At: time.Now(), Method: r.Method, URI: r.RequestURI, Header: r.Header.Clone(), Body: b}
	f.mu.Lock()
	id := r.Header.Get("Idempotency-Key")
	n := f.tries[id]
	f.tries[id]++
	f.calls = append(f.calls, c)
	answer := f.answer
	f.mu.Unlock()
	rep := answer(c, n)
	for k, v := range rep.Header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(rep.Status)
	_, _ = io.WriteString(w, rep.Body)
}

func (f *fakeCRM) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// ids returns the Idempotency-Key of every call, in order.
func ids(calls []call) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = c.Header.Get("Idempotency-Key")
	}
	return out
}

// env is one test's NATS server and topology.
type env struct {
	names topology.Names
	nc    *nats.Conn
	js    jetstream.JetStream
}

func newEnv(t *testing.T, partitions int) *env {
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(partitions))
	require.NoError(t, names.Ensure(context.Background(), js))
	return &env{names: names, nc: nc, js: js}
}

// request is a send-mode request of type "evt" with body {"key":..,"seq":..}
// and event id <key token>#<seq>.
func request(key string, seq int) crmreq.Request {
	now := time.Now().UTC()
	return crmreq.Request{
		EventID: fmt.Sprintf("%s#%d", topology.KeyToken(key), seq), Type: "evt", Key: key,
		OccurredAt: now.Add(-time.Second), AcceptedAt: now,
		Mode: "send", Method: "POST", Path: "/events",
		Body: json.RawMessage(fmt.Sprintf(`{"key":%q,"seq":%d}`, key, seq)),
	}
}

func (e *env) publish(t *testing.T, r crmreq.Request) {
	b, err := json.Marshal(r)
	require.NoError(t, err)
	e.publishRaw(t, r.Type, r.Key, r.EventID, b)
}

func (e *env) publishRaw(t *testing.T, typ, key, id string, data []byte) {
	m := nats.NewMsg(e.names.DispatchSubject(e.names.PartitionOf(key), typ, topology.KeyToken(key)))
	m.Data = data
	m.Header.Set(nats.MsgIdHdr, id)
	_, err := e.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

// start runs a dispatcher against crmURL until the end of the test.
func (e *env) start(t *testing.T, cfg dispatcher.Config, log zerolog.Logger) *dispatcher.Service {
	svc, err := dispatcher.New(cfg, dispatcher.Deps{NC: e.nc, JS: e.js, Names: e.names, Logger: log})
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Stop(ctx); !errors.Is(err, dispatcher.ErrNotStarted) {
			require.NoError(t, err)
		}
	})
	return svc
}

// fast is a config with short delays for tests that need no real timing.
func fast(url string) dispatcher.Config {
	return dispatcher.Config{
		CRM:   dispatcher.CRMConfig{URL: url, Timeout: 2 * time.Second},
		Retry: dispatcher.RetryConfig{Tries: 3, Delay: 20 * time.Millisecond},
		Pause: 300 * time.Millisecond,
	}
}

func (e *env) paused(t *testing.T, p int) bool {
	c, err := e.js.Consumer(context.Background(), e.names.DispatchStream(),
		e.names.ConsumerName(topology.StageDispatcher, p))
	require.NoError(t, err)
	return c.CachedInfo().Paused
}

func (e *env) parked(t *testing.T, typ, key string) *jetstream.RawStreamMsg {
	s, err := e.js.Stream(context.Background(), e.names.ParkedStream())
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(context.Background(),
		e.names.ParkedSubject(topology.StageDispatcher, typ, topology.KeyToken(key)))
	require.NoError(t, err)
	return m
}

func (e *env) dispatchLeft(t *testing.T) uint64 {
	s, err := e.js.Stream(context.Background(), e.names.DispatchStream())
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// seqOf reads the "seq" field of a request body sent by request().
func seqOf(t *testing.T, body []byte) (string, int) {
	var v struct {
		Key string `json:"key"`
		Seq int    `json:"seq"`
	}
	require.NoError(t, json.Unmarshal(body, &v))
	return v.Key, v.Seq
}
