package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/topology"
)

// `sluice run` (the built binary, embedded NATS, the demo producer) is
// killed with SIGKILL while it delivers, started again on the same data
// directory, and then `sluice audit` must find nothing lost: a delivered
// record is stored before the dispatch message it is about is acked, so
// the kill cannot keep the ack and drop the record (issue 11). Once with
// the built-in CRM simulator, once with `sluice crmsim` as its own process.
func TestAuditAfterSIGKILLFindsNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs bin/sluice")
	}
	bin := buildSluice(t)
	for _, tc := range []struct {
		name             string
		external, inline bool
	}{
		{"builtin-simulator", false, false},
		{"external-simulator", true, false},
		// dispatcher.inline: the enricher's lanes send; the same kills.
		{"inline", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			killAndAudit(t, bin, tc.external, tc.inline)
		})
	}
}

func killAndAudit(t *testing.T, bin string, external, inline bool) {
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "sluice.log"))
	require.NoError(t, err)
	defer logf.Close()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("sluice log (tail):\n%s", b)
		}
	})
	crm := ""
	if external {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		sim := exec.Command(bin, "crmsim", "--addr", addr)
		sim.Stdout, sim.Stderr = logf, logf
		require.NoError(t, sim.Start())
		t.Cleanup(func() { _ = sim.Process.Kill(); _, _ = sim.Process.Wait() })
		crm = fmt.Sprintf("dispatcher: {crm: {url: %q}}\n", "http://"+addr)
	}
	if inline {
		crm = "dispatcher: {inline: true}\n"
	}
	port := freePort(t)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	writeConfig := func(demo string) {
		require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
log: {level: warn, format: json}
nats:
  embedded: {listen: "127.0.0.1:%d"}
topology: {partitions: 16, ack_wait: 2s}
ingest: {http_addr: "127.0.0.1:0"}
inbound: {http_addr: "127.0.0.1:0"}
ops: {addr: "127.0.0.1:0"}
demo: {enabled: %q, rate: 1000, keys: 500}
%s`, filepath.Join(dir, "data"), port, demo, crm)), 0o600))
	}
	writeConfig("true")

	proc := startSluice(t, bin, cfgPath, logf)
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	names := topology.New(topology.Config{Partitions: 16})

	// Kill while deliveries flow, three times: each time 300 more
	// delivered records after the (re)start, then SIGKILL and a restart on
	// the same data directory (the lanes pick up where the kill left them).
	delivered := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, names.LedgerStream())
		if err != nil {
			return 0
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(names.LedgerSubject("delivered", "*", "*")))
		if err != nil {
			return 0
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n
	}
	var seen uint64
	for kill := 1; kill <= 3; kill++ {
		from := seen
		require.Eventually(t, func() bool {
			seen = max(seen, delivered())
			return seen >= from+300
		}, 90*time.Second, 2*time.Millisecond, "sluice did not deliver 300 events (kill %d)", kill)
		require.NoError(t, proc.Process.Signal(syscall.SIGKILL))
		_, _ = proc.Process.Wait()
		t.Logf("SIGKILL %d after %d delivered records", kill, seen)
		proc = startSluice(t, bin, cfgPath, logf)
	}
	// The last run has no demo producer: it delivers the backlog, then
	// the audit reads a pipeline at rest.
	require.NoError(t, proc.Process.Signal(syscall.SIGKILL))
	_, _ = proc.Process.Wait()
	writeConfig("false")
	proc = startSluice(t, bin, cfgPath, logf)
	if !assert.Eventually(t, func() bool { return drained(js, names) }, 120*time.Second, 100*time.Millisecond,
		"the pipeline did not drain after the last restart") {
		logBacklog(t, js, names)
		t.FailNow()
	}

	var out, errb bytes.Buffer
	audit := exec.Command(bin, "audit", "--config", cfgPath, "--json")
	audit.Stdout, audit.Stderr = &out, &errb
	err = audit.Run()
	var rep struct {
		Totals struct {
			Accepted  int `json:"accepted"`
			Delivered int `json:"delivered"`
			Parked    int `json:"parked"`
			InFlight  int `json:"in_flight"`
			Lost      int `json:"lost"`
			Reordered int `json:"reordered"`
		} `json:"totals"`
		Keys []struct {
			Key  string `json:"key"`
			Lost []struct {
				ID  string `json:"id"`
				Why string `json:"why"`
			} `json:"lost"`
		} `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), "audit output: %s\nstderr: %s", out.String(), errb.String())
	t.Logf("audit: %+v", rep.Totals)
	var exit *exec.ExitError
	if errors.As(err, &exit) || rep.Totals.Lost > 0 {
		for _, k := range rep.Keys {
			for _, l := range k.Lost {
				t.Logf("LOST %s (key %s): %s", l.ID, k.Key, l.Why)
			}
		}
	}
	require.NoError(t, err, "sluice audit: %s", errb.String())
	require.Zero(t, rep.Totals.Lost, "lost events after kill -9")
	require.Zero(t, rep.Totals.Reordered, "reordered events after kill -9")
	require.Positive(t, rep.Totals.Delivered)
	if inline {
		ds, err := js.Stream(context.Background(), names.DispatchStream())
		require.NoError(t, err)
		require.Zero(t, ds.CachedInfo().State.LastSeq, "inline: nothing may go through the dispatch stream")
	}
	if !external {
		// The built-in simulator keeps its records in the data dir: after
		// the restarts the demo's updates still find their CRM records
		// (they parked with "no CRM id" when it forgot them).
		require.Zero(t, rep.Totals.Parked, "events parked after restarts with the built-in simulator")
	}

	require.NoError(t, proc.Process.Signal(syscall.SIGINT))
	_, _ = proc.Process.Wait()
}

// drained reports whether every accepted event went through: the
// enricher lanes have nothing pending and the dispatch stream is empty.
func drained(js jetstream.JetStream, names topology.Names) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := js.Stream(ctx, names.DispatchStream())
	if err != nil {
		return false
	}
	if ds.CachedInfo().State.Msgs != 0 {
		return false
	}
	for p := range names.Partitions() {
		c, err := js.Consumer(ctx, names.EventsStream(), names.ConsumerName(topology.StageEnricher, p))
		if err != nil {
			return false
		}
		ci := c.CachedInfo()
		if ci.NumPending != 0 || ci.NumAckPending != 0 {
			return false
		}
	}
	return true
}

// logBacklog says where an undrained pipeline holds events: the dispatch
// stream's count and every lane with something pending.
func logBacklog(t *testing.T, js jetstream.JetStream, names topology.Names) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ds, err := js.Stream(ctx, names.DispatchStream()); err == nil {
		st := ds.CachedInfo().State
		t.Logf("dispatch stream: %d messages, first seq %d", st.Msgs, st.FirstSeq)
	}
	for _, st := range []struct {
		stream string
		stage  topology.Stage
	}{{names.EventsStream(), topology.StageEnricher}, {names.DispatchStream(), topology.StageDispatcher}} {
		for p := range names.Partitions() {
			c, err := js.Consumer(ctx, st.stream, names.ConsumerName(st.stage, p))
			if err != nil {
				t.Logf("%s %d: %v", st.stage, p, err)
				continue
			}
			ci := c.CachedInfo()
			if ci.NumPending != 0 || ci.NumAckPending != 0 || ci.Paused {
				t.Logf("%s: pending %d, ack pending %d, redelivered %d, paused %v, delivered seq %d, ack floor %d",
					ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.Paused, ci.Delivered.Stream, ci.AckFloor.Stream)
			}
		}
	}
}
