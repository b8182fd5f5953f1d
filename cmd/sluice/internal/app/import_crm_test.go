package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/e2e/harness"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/meshtest"
)

// The acceptance: a 10,000-row CSV and an XLSX imported into a
// running pipeline reach the CRM simulator once per row, in file order per key,
// and a second import sends nothing new.
func TestImportDeliversEveryRowOnceToTheCRM(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	cleanEnv(t)
	tc := meshtest.Topology(8)
	h, err := harness.New(context.Background(), harness.Options{Dir: t.TempDir(), Topology: tc,
		Dispatcher: dispatcher.Config{Retry: dispatcher.RetryConfig{Tries: 3, Delay: 20 * time.Millisecond}, Pause: 200 * time.Millisecond},
		Sim:        crmsim.Config{ErrorRate: 0.05, Seed: 6}})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	require.NoError(t, h.StartDispatcher(context.Background()))
	require.NoError(t, h.StartEnricher(context.Background()))
	pointCLI(t, h.URL(), tc)

	path := filepath.Join(t.TempDir(), "signups.csv")
	var b strings.Builder
	b.WriteString("customer_id,name,email,phone,city\n")
	const rows, keys = 10000, 200
	for i := 0; i < rows; i++ {
		fmt.Fprintf(&b, "%d,Person %d,p%d@example.com,+91 98200 %05d,Pune\n", 1+i%keys, i+2, i, i)
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	_, err = runCLI(t, "import", path, "--type", "customer_signed_up", "--batch", "500")
	require.NoError(t, err)

	// And the sample spreadsheet (XLSX, 20 customers).
	_, err = runCLI(t, "import", filepath.Join("testdata", "import", "customers.xlsx"), "--type", "customer_signed_up")
	require.NoError(t, err)
	const total = rows + 20

	// Expected: per key, the stored ids in stream order (file order per key,
	// checked by TestImportLargeCSVOnceInOrder).
	ctx := context.Background()
	cons, err := h.JS.OrderedConsumer(ctx, h.Names.EventsStream(), jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	want := map[string][]string{}
	for got := 0; got < total; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			var e envelope.Envelope
			require.NoError(t, json.Unmarshal(m.Data(), &e))
			want[e.Key] = append(want[e.Key], e.ID)
			got++
		}
	}
	require.GreaterOrEqual(t, len(want), keys)

	var rep crmsim.Report
	require.Eventually(t, func() bool {
		rep = h.Sim.Check(want)
		return rep.Totals.Missing == 0
	}, 2*time.Minute, 100*time.Millisecond, "every imported row reaches the CRM")
	require.True(t, rep.OK(), "%s", rep.String())
	require.Equal(t, total, rep.Totals.Delivered)
	require.Zero(t, rep.Totals.DuplicateIDs)

	out, err := runCLI(t, "import", path, "--type", "customer_signed_up", "--batch", "500")
	require.NoError(t, err)
	require.Contains(t, out, fmt.Sprintf(": 0 stored, %d already stored (duplicates)", rows))
	require.Equal(t, total, h.Sim.Check(want).Totals.Delivered)
}
