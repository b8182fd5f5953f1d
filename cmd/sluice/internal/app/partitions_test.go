package app

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/e2e/harness"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

// partitionPipeline runs `sluice run` in-process (every service, one
// process) against a test server and a CRM simulator that outlives restarts.
type partitionPipeline struct {
	t    *testing.T
	cfg  string // YAML config file
	sim  *crmsim.Sim
	js   jetstream.JetStream
	tc   topology.Config
	stop func()
}

func newPartitionPipeline(t *testing.T, partitions int) *partitionPipeline {
	t.Helper()
	cleanEnv(t)
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	tc := meshtest.Topology(partitions)
	pointCLI(t, s.ClientURL(), tc)
	// A CRM slower than the producer with 4 or 3 lanes (one request per
	// lane every ~17 ms: ~230 or ~170 events/s against 250), so that intake
	// closes on a backlog and the drain has work to wait for.
	sim, err := crmsim.New(crmsim.Config{Latency: 15 * time.Millisecond, Jitter: 5 * time.Millisecond}, zerolog.Nop())
	require.NoError(t, err)
	require.NoError(t, sim.Start(context.Background()))
	t.Cleanup(func() { _ = sim.Stop(context.Background()) })
	t.Setenv("SLUICE_DISPATCHER_CRM_URL", sim.URL())
	p := &partitionPipeline{t: t, sim: sim, js: js, tc: tc, cfg: writeConfig(t, `
demo: {enabled: "false"}
progress_interval: -1s
ops: {addr: "off"}
ingest: {http_addr: "127.0.0.1:0"}
dispatcher: {retry: {tries: 3, delay: 20ms}, pause: 300ms}
`)}
	// 100 keys: customers 1..60 (the sample has 50) and cars 1..40.
	ctx := context.Background()
	c, err := LoadConfig(p.cfg, "all")
	require.NoError(t, err)
	db, err := productdb.Open(ctx, productdb.Config{Driver: "sqlite", DSN: filepath.Join(c.DataDir, "product.db")})
	require.NoError(t, err)
	require.NoError(t, productdb.ExecScript(ctx, db, schemas.MarketplaceSeed()))
	require.NoError(t, harness.SeedCustomers(ctx, db, 51, 60))
	require.NoError(t, db.Close())
	return p
}

// start runs every service with topology.partitions = n; it returns Run's
// error if Run ends within settle (a refused start).
func (p *partitionPipeline) start(n int, settle time.Duration) error {
	p.t.Helper()
	return p.run(n, "all", settle)
}

func (p *partitionPipeline) run(n int, target string, settle time.Duration) error {
	p.t.Helper()
	c, err := LoadConfig(p.cfg, "all")
	require.NoError(p.t, err)
	c.Topology.Partitions = n
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, target, zerolog.Nop()) }()
	select {
	case err := <-done:
		cancel()
		return err
	case <-time.After(settle):
	}
	p.stop = func() {
		cancel()
		require.NoError(p.t, <-done)
		p.stop = nil
	}
	p.t.Cleanup(func() {
		if p.stop != nil {
			p.stop()
		}
	})
	return nil
}

func (p *partitionPipeline) cli(args ...string) string {
	p.t.Helper()
	out, err := runCLI(p.t, args...)
	require.NoError(p.t, err, "sluice %s:\n%s", strings.Join(args, " "), out)
	p.t.Logf("sluice %s:\n%s", strings.Join(args, " "), out)
	return out
}

// change runs the documented procedure from one count to another while the
// producer keeps publishing: drain, stop, switch, open, start.
func (p *partitionPipeline) change(from, to int) {
	p.t.Helper()
	began := time.Now()
	p.cli("partitions", "drain", "--reason", "test "+strconv.Itoa(from)+" -> "+strconv.Itoa(to), "--timeout", "60s", "--interval", "200ms")
	drained := time.Now()
	p.stop()
	out := p.cli("partitions", "switch", "--to", strconv.Itoa(to), "--reason", "test", "--wait", "30s")
	require.Contains(p.t, out, "switched "+strconv.Itoa(from)+" -> "+strconv.Itoa(to))

	// The old count is refused at start, by every target, naming the procedure.
	for _, target := range Targets {
		err := p.run(from, target, 30*time.Second)
		require.ErrorIs(p.t, err, topology.ErrPartitionsChanged, target)
		require.ErrorContains(p.t, err, `"Changing the partition count" in docs/runbook.md`, target)
	}

	// The operator sets the new count, opens intake (only `open` does: a
	// starting service keeps it closed) and starts the services.
	p.t.Setenv("SLUICE_TOPOLOGY_PARTITIONS", strconv.Itoa(to))
	p.cli("partitions", "open", "--reason", "test")
	p.t.Logf("%d -> %d: drain %s, intake closed %s", from, to, drained.Sub(began).Round(time.Millisecond),
		time.Since(began).Round(time.Millisecond))
	require.NoError(p.t, p.start(to, 2*time.Second))
}

// The documented procedure, run while a producer keeps publishing over 100
// keys and retrying with the same ids: 4 -> 8 -> 3 partitions. The CRM gets
// every event once, each key's events in order across both switches.
func TestPartitionChangeKeepsPerKeyOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline through two partition changes")
	}
	p := newPartitionPipeline(t, 4)
	require.NoError(t, p.start(4, 2*time.Second))

	plan, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 2000, Seed: 11,
		CustomerIDs: loadgen.Range{Min: 1, Max: 60}, CarIDs: loadgen.Range{Min: 1, Max: 40}})
	require.NoError(t, err)
	require.Len(t, plan.Keys(), 100)
	pctx, pcancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer pcancel()
	published := make(chan loadgen.Result, 1)
	go func() {
		res, err := loadgen.PublishJetStream(pctx, p.js, topology.New(p.tc), plan.Events,
			loadgen.PublishOptions{Rate: 250, Concurrency: 100, AckTimeout: 2 * time.Second})
		if err != nil {
			t.Errorf("producer: %v", err)
		}
		published <- res
	}()

	require.Eventually(t, func() bool { return p.sim.Delivered() >= 300 }, 60*time.Second, 20*time.Millisecond)
	p.change(4, 8)
	at := p.sim.Delivered()
	require.Eventually(t, func() bool { return p.sim.Delivered() >= at+300 }, 60*time.Second, 20*time.Millisecond)
	p.change(8, 3)

	res := <-published
	t.Logf("producer: %d published, %d retries, %d duplicates in %s", res.Published, res.Retries, res.Duplicates, res.Elapsed)
	require.Equal(t, len(plan.Events), res.Published)
	require.Positive(t, res.Retries, "the producer met the closed intake and retried")
	var rep crmsim.Report
	if !assert.Eventually(t, func() bool {
		rep = p.sim.Check(plan.Expected())
		return rep.Totals.Missing == 0
	}, 30*time.Second, 100*time.Millisecond, "not everything reached the CRM") {
		t.Fatalf("CRM: %s", rep)
	}
	t.Logf("CRM: %s", rep)
	require.True(t, rep.OK(), "%s", rep)
	// No event was sent to the CRM twice: a new lane re-reading the history
	// stored under the old count would re-send old updates after new ones.
	require.Zero(t, rep.Totals.ExtraDeliveries, "%s", rep)

	// Every action is in the audit trail.
	out := p.cli("audit", "actions", "--json")
	var es []AuditEntry
	require.NoError(t, json.Unmarshal([]byte(out), &es))
	var actions []string
	for _, e := range es {
		var r PartitionsRecord
		require.NoError(t, json.Unmarshal(e.Record, &r))
		actions = append(actions, r.Action+" "+strconv.Itoa(r.From)+">"+strconv.Itoa(r.To))
	}
	require.Equal(t, []string{"drain 4>0", "switch 4>8", "open 8>0", "drain 8>0", "switch 8>3", "open 3>0"}, actions)
}

// The commands refuse what is unsafe, and say what to do instead.
func TestPartitionsCommandsRefuseUnsafeSteps(t *testing.T) {
	js, names := cliServer(t, 4)
	ctx := context.Background()
	for _, stage := range []topology.Stage{topology.StageEnricher, topology.StageDispatcher} {
		for p := range 4 {
			stream, filter := names.StageFilter(stage, p)
			_, err := js.CreateOrUpdateConsumer(ctx, stream, names.LaneConsumerConfig(stage, p, filter))
			require.NoError(t, err)
		}
	}
	_, err := js.Publish(ctx, names.EventSubject("order", "k1"), []byte(`{}`))
	require.NoError(t, err)

	out, err := runCLI(t, "partitions", "status")
	require.NoError(t, err)
	require.Contains(t, out, "next: to change the count: `sluice partitions drain")

	_, err = runCLI(t, "partitions", "switch", "--to", "8", "--reason", "test", "--wait", "0s")
	require.ErrorIs(t, err, topology.ErrIntakeOpen)
	_, err = runCLI(t, "partitions", "drain")
	require.ErrorContains(t, err, "--reason is required")

	// No service runs: the event stays in its lane, the drain gives up
	// and says that intake stays closed.
	_, err = runCLI(t, "partitions", "drain", "--reason", "test", "--timeout", "0s")
	require.ErrorIs(t, err, topology.ErrNotDrained)
	require.ErrorContains(t, err, "intake stays closed")
	out, err = runCLI(t, "partitions", "status")
	require.NoError(t, err)
	require.Contains(t, out, "enricher-00"+strconv.Itoa(names.PartitionOf("k1")))
	require.Contains(t, out, "next: intake is closed and the lanes are draining")
	_, err = runCLI(t, "partitions", "switch", "--to", "8", "--reason", "test", "--wait", "0s")
	require.ErrorIs(t, err, topology.ErrNotDrained)

	// A config of another count may not open intake.
	t.Setenv("SLUICE_TOPOLOGY_PARTITIONS", "8")
	_, err = runCLI(t, "partitions", "open")
	require.ErrorIs(t, err, topology.ErrPartitionsChanged)
	require.ErrorContains(t, err, `"Changing the partition count" in docs/runbook.md`)
	t.Setenv("SLUICE_TOPOLOGY_PARTITIONS", "4")
	out, err = runCLI(t, "partitions", "open", "--reason", "gave up")
	require.NoError(t, err)
	require.Contains(t, out, "intake open on "+names.EventsStream())
	_, err = js.Publish(ctx, names.EventSubject("order", "k1"), []byte(`{}`))
	require.NoError(t, err, "producers are accepted again")
}
