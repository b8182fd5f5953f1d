package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// freePort is a port reserved until the end of the test: the processes
// these tests kill and restart bind it again (meshtest.ReservePort).
func freePort(t *testing.T) int {
	return meshtest.FreePorts(t, 1)[0]
}

// buildSluice builds the single binary the way `make build` does.
func buildSluice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	cmd := exec.Command("go", "build", "-o", bin, "sluice.dev/cmd/sluice")
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Run(), "go build sluice")
	return bin
}

func startSluice(t *testing.T, bin, cfg string, log *os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return cmd
}

// The whole binary, embedded NATS included, is killed with SIGKILL while
// events are being produced and delivered, then started again on the same
// data directory: every event reaches the CRM, in order per key. Then a
// SIGINT stops it cleanly with exit status 0.
func TestBinarySurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs bin/sluice")
	}
	bin := buildSluice(t)
	sim, err := crmsim.New(crmsim.Config{ErrorRate: 0.05, Seed: 3, Latency: 300 * time.Microsecond}, zerolog.Nop())
	require.NoError(t, err)
	require.NoError(t, sim.Start(context.Background()))
	t.Cleanup(func() { _ = sim.Stop(context.Background()) })

	dir := t.TempDir()
	port := freePort(t)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
log: {level: warn, format: json}
nats:
  embedded: {listen: "127.0.0.1:%d"}
topology: {partitions: 8, ack_wait: 2s}
ingest: {http_addr: ""}
dispatcher:
  crm: {url: %q}
  retry: {tries: 3, delay: 50ms}
  pause: 500ms
demo: {enabled: "false"}
ops: {addr: "127.0.0.1:0"}
`, filepath.Join(dir, "data"), port, sim.URL())), 0o600))
	logf, err := os.Create(filepath.Join(dir, "sluice.log"))
	require.NoError(t, err)
	defer logf.Close()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("sluice log:\n%s", b)
		}
	})

	proc := startSluice(t, bin, cfgPath, logf)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	var nc *nats.Conn
	require.Eventually(t, func() bool {
		nc, err = nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		return err == nil
	}, 60*time.Second, 100*time.Millisecond, "sluice's embedded NATS never came up")
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	names := topology.New(topology.Config{Partitions: 8})
	require.Eventually(t, func() bool {
		_, err := js.Stream(context.Background(), names.EventsStream())
		return err == nil
	}, 30*time.Second, 50*time.Millisecond)

	p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 3000, Seed: 3})
	require.NoError(t, err)
	published := make(chan loadgen.Result, 1)
	go func() {
		res, err := loadgen.PublishJetStream(context.Background(), js, names, p.Events,
			loadgen.PublishOptions{Rate: 1500, Concurrency: 32})
		if err != nil {
			t.Errorf("publish: %v", err)
		}
		published <- res
	}()

	require.Eventually(t, func() bool { return sim.Delivered() >= 600 }, 60*time.Second, time.Millisecond)
	require.NoError(t, proc.Process.Signal(syscall.SIGKILL))
	_, _ = proc.Process.Wait()
	t.Logf("SIGKILL at %d delivered", sim.Delivered())

	proc = startSluice(t, bin, cfgPath, logf)
	res := <-published
	require.Equal(t, 3000, res.Published)
	t.Logf("producer: %d published, %d retries across the kill", res.Published, res.Retries)

	want := p.Expected()
	var rep crmsim.Report
	require.Eventually(t, func() bool {
		rep = sim.Check(want)
		return rep.Totals.Missing == 0
	}, 120*time.Second, 100*time.Millisecond)
	requireInOrder(t, rep)
	t.Logf("duplicates at the CRM (same Idempotency-Key): %d ids", rep.Totals.DuplicateIDs)

	require.NoError(t, proc.Process.Signal(syscall.SIGINT))
	exited := make(chan error, 1)
	go func() { exited <- proc.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "a SIGINT stop must exit 0")
	case <-time.After(30 * time.Second):
		t.Fatal("sluice did not stop within 30s of SIGINT")
	}
}
