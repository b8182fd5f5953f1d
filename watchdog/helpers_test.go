package watchdog_test

import (
	"context"
	"encoding/json"
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

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// slackSecretPath is the secret part of the stand-in webhook URL; it must
// never show up in logs.
const slackSecretPath = "/services/T000/B000/s3cr3t-token"

// hookServer stands in for Slack (or a generic webhook) and records bodies.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

func newHookServer(t *testing.T) *hookServer {
	h := &hookServer{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.bodies = append(h.bodies, b)
		h.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(h.Close)
	return h
}

// texts returns the "text" of every Slack message received.
func (h *hookServer) texts(t *testing.T) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, b := range h.bodies {
		var m map[string]string
		require.NoError(t, json.Unmarshal(b, &m))
		out = append(out, m["text"])
	}
	return out
}

// alerts decodes every generic-webhook body.
func (h *hookServer) alerts(t *testing.T) []watchdog.Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []watchdog.Alert
	for _, b := range h.bodies {
		var a watchdog.Alert
		require.NoError(t, json.Unmarshal(b, &a))
		out = append(out, a)
	}
	return out
}

type env struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	names topology.Names
	slack *hookServer
	hook  *hookServer
	logs  *meshtest.LogBuffer
	url   string
}

// newEnv starts a server and ensures a topology with the given ack wait.
func newEnv(t *testing.T, partitions int, ackWait time.Duration) *env {
	t.Helper()
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	cfg := meshtest.Topology(partitions)
	cfg.AckWait = ackWait
	names := topology.New(cfg)
	require.NoError(t, names.Ensure(context.Background(), js))
	return &env{nc: nc, js: js, names: names, slack: newHookServer(t), hook: newHookServer(t),
		logs: &meshtest.LogBuffer{}, url: s.ClientURL()}
}

// fastConfig is a config with tiny thresholds and both sinks pointing at
// the stand-ins; services are not checked unless a test sets them.
func (e *env) fastConfig() watchdog.Config {
	return watchdog.Config{
		PollInterval:       30 * time.Millisecond,
		StallAfter:         time.Hour,
		NoPullerAfter:      time.Hour,
		ServiceSilentAfter: time.Hour,
		Services:           []string{},
		Alerts:             watchdog.AlertsConfig{MinInterval: time.Hour, RecoverAfter: 100 * time.Millisecond},
		Slack:              watchdog.SlackConfig{WebhookURL: e.slack.URL + slackSecretPath},
		Webhook:            watchdog.WebhookConfig{URL: e.hook.URL + "/hook?token=s3cr3t-token"},
	}
}

// start runs a watchdog and stops it at the end of the test.
func (e *env) start(t *testing.T, cfg watchdog.Config, deps watchdog.Deps) *watchdog.Watchdog {
	t.Helper()
	deps.NC, deps.Names = e.nc, e.names
	if deps.JS == nil {
		deps.JS = e.js
	}
	deps.Logger = zerolog.New(e.logs)
	w, err := watchdog.New(cfg, deps)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, w.Stop(ctx))
		require.NotContains(t, e.logs.String(), "s3cr3t", "a webhook secret was logged")
	})
	return w
}

// laneConsumer creates the dispatcher lane consumer of partition p, as the
// lane runner does, and publishes n requests into it.
func (e *env) laneConsumer(t *testing.T, p, n int) jetstream.Consumer {
	t.Helper()
	ctx := context.Background()
	stream, filter := e.names.StageFilter(topology.StageDispatcher, p)
	c, err := e.js.CreateOrUpdateConsumer(ctx, stream, e.names.LaneConsumerConfig(topology.StageDispatcher, p, filter))
	require.NoError(t, err)
	for i := 0; i < n; i++ {
		_, err := e.js.Publish(ctx, e.names.DispatchSubject(p, "t", "k"), []byte(`{}`))
		require.NoError(t, err)
	}
	return c
}

// drain fetches and acks every message of c, one at a time (MaxAckPending=1).
func drain(t *testing.T, c jetstream.Consumer) {
	t.Helper()
	for {
		info, err := c.Info(context.Background())
		require.NoError(t, err)
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second), jetstream.FetchPriorityGroup(topology.LanePriorityGroup))
		require.NoError(t, err)
		for m := range batch.Messages() {
			require.NoError(t, m.DoubleAck(context.Background()))
		}
	}
}
