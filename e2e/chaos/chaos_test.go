package chaos

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// Environment of TestChaos (make chaos sets the first two):
//
//	SLUICE_CHAOS=1              run it (otherwise it skips: it needs root,
//	                            network namespaces and minutes)
//	SLUICE_CHAOS_BIN            directory holding sluice and nats-server
//	SLUICE_CHAOS_EVENTS         events to produce (default 100000, the issue's
//	                            full count; ~9 min on 2 cores)
//	SLUICE_CHAOS_KEYS           keys they spread over (default 1000)
//	SLUICE_CHAOS_PARTITIONS     topology.partitions (default 32)
//	SLUICE_CHAOS_DRAIN          longest wait for the last deliveries after the
//	                            last fault (default 7m)
//	SLUICE_CHAOS_DIR            keep configs, logs and stores here (default: a
//	                            temporary directory, removed on success)
//	SLUICE_CHAOS_INLINE=1       dispatcher.inline: the enricher processes send
//	                            to the CRM
//	SLUICE_TEST_POSTGRES_DSN    the PostgreSQL server to create the product
//	                            database on (default the local test server)
func TestChaos(t *testing.T) {
	if os.Getenv("SLUICE_CHAOS") != "1" {
		t.Skip("chaos suite: set SLUICE_CHAOS=1 to run it (make chaos); it needs root, `ip netns` and ~9 min")
	}
	if os.Geteuid() != 0 {
		t.Skip("chaos suite: needs root (it creates network namespaces, a bridge and veth pairs); run make chaos as root")
	}
	if err := netnsAvailable(); err != nil {
		t.Skipf("chaos suite: network namespaces are not available here (`ip netns add` failed): %v", err)
	}
	o := options{events: envInt(t, "SLUICE_CHAOS_EVENTS", 100000), keys: envInt(t, "SLUICE_CHAOS_KEYS", 1000),
		partitions: envInt(t, "SLUICE_CHAOS_PARTITIONS", 32), nodes: 3,
		publishFor: 180 * time.Second, drainTimeout: 7 * time.Minute}
	o.inline = os.Getenv("SLUICE_CHAOS_INLINE") == "1"
	if d := os.Getenv("SLUICE_CHAOS_DRAIN"); d != "" {
		var err error
		if o.drainTimeout, err = time.ParseDuration(d); err != nil || o.drainTimeout <= 0 {
			t.Fatalf("SLUICE_CHAOS_DRAIN=%q: want a positive duration", d)
		}
	}
	bins := os.Getenv("SLUICE_CHAOS_BIN")
	for _, b := range []string{"sluice", "nats-server"} {
		if _, err := os.Stat(filepath.Join(bins, b)); err != nil {
			t.Fatalf("SLUICE_CHAOS_BIN=%q has no %s (make chaos builds both into bin/): %v", bins, b, err)
		}
	}
	baseDSN := os.Getenv("SLUICE_TEST_POSTGRES_DSN")
	if baseDSN == "" {
		baseDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	dir := os.Getenv("SLUICE_CHAOS_DIR")
	if dir == "" {
		var err error
		dir, err = os.MkdirTemp("", "sluice-chaos-")
		require.NoError(t, err)
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	wall := time.Now()
	s := newSuite(o, dir, bins, os.Stdout)
	fmt.Fprintf(s.out, "chaos: work dir %s (configs, logs, stores, pid file)\n", dir)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute+o.drainTimeout)
	defer cancel()

	// The network and every process go away however the test ends; the
	// pid file and .ci/chaos's trap cover a test process killed outright.
	t.Cleanup(func() {
		s.stopAll()
		cleanupNetwork(o.nodes)
		if !t.Failed() && os.Getenv("SLUICE_CHAOS_DIR") == "" {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(s.out, "chaos: kept %s\n", dir)
		}
	})
	require.NoError(t, setupNetwork(o.nodes), "network namespaces")

	// Product database: PostgreSQL through a proxy the suite cuts.
	proxy := meshtest.NewTCPProxy(t, pgHostPort(t, baseDSN))
	dsn, err := prepareDB(ctx, baseDSN, 960, proxy.Addr())
	if err != nil {
		t.Skipf("chaos suite: PostgreSQL is needed for the product-DB outage and is not usable at %s: %v",
			redactDSN(baseDSN), err)
	}

	// The CRM simulator, a process of its own.
	simPort, err := freePort()
	require.NoError(t, err)
	s.simURL = fmt.Sprintf("http://127.0.0.1:%d", simPort)
	s.sim = s.newProc("crmsim", []string{s.sluice, "crmsim", "--addr", fmt.Sprintf("127.0.0.1:%d", simPort)}, nil)
	require.NoError(t, s.sim.start())
	require.NoError(t, waitHTTP(s.simURL+"/_sim/stats", s.sim, 30*time.Second))
	s.crm = crmsim.NewClient(s.simURL)

	// NATS, then Sluice.
	s.cluster, err = startCluster(s, o.nodes)
	require.NoError(t, err)
	ingestPort, err := freePort()
	require.NoError(t, err)
	inboundPort, err := freePort()
	require.NoError(t, err)
	cfg, err := sluiceConfig(o, dsn, s.simURL, ingestPort, inboundPort)
	require.NoError(t, err)
	_, err = s.writeFile("sluice.yaml", cfg)
	require.NoError(t, err)
	require.NoError(t, checkConfig(s.sluice, s.config))
	require.NoError(t, startServices(s))
	nc, js, err := connect(o.nodes)
	require.NoError(t, err)
	defer nc.Close()
	names := topology.New(topology.Config{Partitions: o.partitions})

	plan, err := loadgen.NewPlan(loadgen.PlanConfig{Events: o.events, Keys: o.keys, Seed: 11,
		CustomerIDs: loadgen.Range{Min: 1, Max: 960}, CarIDs: loadgen.Range{Min: 1, Max: 40}})
	require.NoError(t, err)
	rate := 0.3
	_, err = s.crm.Configure(ctx, crmsim.ConfigPatch{ErrorRate: &rate})
	require.NoError(t, err)
	setup := time.Since(wall)
	fmt.Fprintf(s.out, "chaos: ready in %s: %d NATS nodes (netns %s..%s), services %s, CRM 30%% 5xx; %d events over %d keys\n",
		setup.Round(time.Second), o.nodes, nodeNS(1), nodeNS(o.nodes), strings.Join(services, ","), o.events, len(plan.Keys()))

	// Traffic and faults.
	s.mu.Lock()
	s.start = time.Now()
	s.mu.Unlock()
	published := make(chan loadgen.Result, 1)
	go func() {
		res, err := loadgen.PublishHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d", ingestPort), plan.Events,
			loadgen.PublishOptions{Rate: float64(o.events) / o.publishFor.Seconds(), BatchSize: 100,
				HTTPClient: &http.Client{Timeout: 15 * time.Second}})
		if err != nil {
			s.logf("producer: %v", err)
		}
		s.logf("producer done: %d published, %d duplicates, %d retries, %d failed in %s",
			res.Published, res.Duplicates, res.Retries, res.Failed, res.Elapsed.Round(time.Second))
		published <- res
	}()
	stopProgress := s.progress(ctx)
	s.runTimeline(ctx, s.timeline(js, names, proxy))
	res := <-published
	faultsEnd := s.since()

	// Drain: every event delivered, or no progress for a while.
	drainErr := s.waitDelivered(ctx, o.events, o.drainTimeout)
	stopProgress()
	drained := s.since()
	v, err := s.judge(ctx, plan.Expected())
	require.NoError(t, err)
	judged := s.since()

	s.summary(v, res, drainErr, map[string]time.Duration{"setup": setup, "traffic": faultsEnd,
		"drain": drained - faultsEnd, "verdict": judged - drained, "total": time.Since(wall)})
	require.Equal(t, o.events, res.Published, "the producer got an ack for every event")
	require.NoError(t, drainErr)
	require.Empty(t, s.crashes, "no process may exit on its own")
	require.True(t, v.ok(), "0 lost, 0 reordered, duplicates only with the same Idempotency-Key")
}

// envInt reads a positive integer from the environment.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// pgHostPort is the host:port of a postgres:// DSN.
func pgHostPort(t *testing.T, dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		t.Fatalf("SLUICE_TEST_POSTGRES_DSN must be a postgres://host:port/db URL")
	}
	if u.Port() == "" {
		return u.Host + ":5432"
	}
	return u.Host
}
