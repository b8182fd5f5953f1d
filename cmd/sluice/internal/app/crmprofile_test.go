package app

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/inbound"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

// The demo's bare-records profile end to end: the simulator posts bare
// lead records signed base64("<webhook id>:" + MAC) to the inbound source
// WithDefaults builds; every delivery is answered 2xx, the leads' statuses
// are written and fields the CRM did not send are never nulled.
func TestSimulatorBareRecordsWebhooks(t *testing.T) {
	c := Config{Simulator: crmsim.Config{Webhooks: crmsim.WebhookConfig{Profile: crmsim.WebhookProfileBareRecords,
		Interval: 10 * time.Millisecond, Leads: 5}}}.withDefaults()
	require.NoError(t, c.Simulator.Validate())
	require.Len(t, c.Inbound.Sources, 1)
	require.Equal(t, inbound.SchemeHMAC, c.Inbound.Sources[0].Scheme)

	ctx := context.Background()
	dsn := filepath.Join(t.TempDir(), "demo.db")
	db, err := productdb.Open(ctx, productdb.Config{DSN: dsn})
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, productdb.ExecScript(ctx, db, schemas.MarketplaceSeed()))
	require.NoError(t, productdb.ExecScript(ctx, db, schemas.InboundSetup()))
	srv := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, srv.ClientURL())
	icfg := c.Inbound
	icfg.HTTPAddr, icfg.DB = "127.0.0.1:0", productdb.Config{DSN: dsn}
	in, err := inbound.New(icfg, inbound.Deps{NC: nc, JS: js, Names: topology.New(meshtest.Topology(2)), DB: db, Logger: zerolog.Nop()})
	require.NoError(t, err)
	require.NoError(t, in.Start(ctx))
	defer in.Stop(ctx)

	ws, err := crmsim.NewWebhookSender(c.Simulator.Webhooks, func() string { return "http://" + in.Addr() + icfg.Sources[0].Path }, zerolog.Nop())
	require.NoError(t, err)
	require.NoError(t, ws.Start(ctx))
	require.Eventually(t, func() bool { return ws.Sent() >= 30 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, ws.Stop(ctx))
	require.Zero(t, ws.Failed(), "every authenticated delivery is answered 2xx")
	st := in.Stats()
	require.Zero(t, st.Unreadable)
	require.Eventually(t, func() bool {
		st = in.Stats()
		return st.Received > 0 && st.Applied+st.Unchanged+st.Parked >= st.Received-st.Duplicates
	}, 20*time.Second, 10*time.Millisecond, "%+v", in.Stats())
	require.Zero(t, st.Parked, "%+v", st)
	require.NotZero(t, st.Duplicates, "the simulator's retries are duplicates")
	var nulls int
	require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM leads WHERE status IS NULL").Scan(&nulls))
	require.Zero(t, nulls)
}
