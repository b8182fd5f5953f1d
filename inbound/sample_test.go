package inbound_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

// The embedded sample catalog works on the marketplace seed plus
// setup.sql, as `make run` uses it: the valid testdata webhooks land.
func TestEmbeddedSampleOnMarketplaceSeed(t *testing.T) {
	ctx := context.Background()
	dsn := filepath.Join(t.TempDir(), "demo.db")
	db, err := productdb.Open(ctx, productdb.Config{DSN: dsn})
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, productdb.ExecScript(ctx, db, schemas.MarketplaceSeed()))
	require.NoError(t, productdb.ExecScript(ctx, db, schemas.InboundSetup()))
	srv := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, srv.ClientURL())
	s, err := inbound.New(inbound.Config{HTTPAddr: "127.0.0.1:0", Sources: []inbound.Source{{Secrets: []string{secret}}},
		DB: productdb.Config{DSN: dsn}},
		inbound.Deps{NC: nc, JS: js, Names: topology.New(meshtest.Topology(2)), DB: db, Logger: zerolog.Nop()})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	defer s.Stop(ctx)
	for _, typ := range schemas.InboundTypes() {
		raw, err := os.ReadFile(filepath.Join("..", "schemas", "inbound", "testdata", "valid", typ+".json"))
		require.NoError(t, err)
		code, _ := post(t, s, "d-"+typ, raw)
		require.Equal(t, 202, code, typ)
	}
	require.Eventually(t, func() bool { return s.Stats().Applied == 3 }, 10*time.Second, 10*time.Millisecond, "%+v", s.Stats())
	var status, loc, body string
	require.NoError(t, db.QueryRow("SELECT status FROM leads WHERE id = 3").Scan(&status))
	require.NoError(t, db.QueryRow("SELECT location FROM appointments WHERE id = 9001").Scan(&loc))
	require.NoError(t, db.QueryRow("SELECT body FROM lead_notes WHERE id = 'note_a1'").Scan(&body))
	require.Equal(t, "contacted", status)
	require.Equal(t, "Bengaluru showroom", loc)
	require.Contains(t, body, "diesel SUV")
}
