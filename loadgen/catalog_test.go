package loadgen_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/loadgen"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/envelope"
	"sluice.dev/schemas"
)

// TestEventsValidateAgainstTheSampleCatalog runs every generated event
// through the marketplace catalog the way ingest does: the key derived
// from the data must be the plan's key and the data must match the schema.
func TestEventsValidateAgainstTheSampleCatalog(t *testing.T) {
	var cfg catalog.Config
	dec := yaml.NewDecoder(bytes.NewReader(schemas.MarketplaceCatalog()))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cfg))
	cat, err := catalog.Compile(cfg, cfg.SchemaFS(schemas.Marketplace()))
	require.NoError(t, err)
	require.ElementsMatch(t, schemas.Types(), loadgen.AllTypes)

	for _, pc := range []loadgen.PlanConfig{
		{Events: 3000, Seed: 21},
		{Events: 300, Simple: true},
		{Events: 300, Seed: 2, Types: []string{loadgen.TypeLeadStatusChanged, loadgen.TypeAppointmentBooked}},
	} {
		p, err := loadgen.NewPlan(pc)
		require.NoError(t, err)
		for _, ev := range p.Events {
			derived := *ev
			derived.Key = ""
			require.NoError(t, cat.Prepare(&derived), "%s: %s", ev.ID, ev.Data)
			require.Equal(t, ev.Key, derived.Key, "%s: the catalog derives the same key", ev.ID)
			require.NoError(t, cat.Prepare(ev), ev.ID)
		}
	}

	// the check is real: a broken event is refused
	bad := envelope.Envelope{ID: "customer:1#1", Type: loadgen.TypeLeadCreated, Key: "customer:1",
		OccurredAt: loadgen.DefaultStart, Data: []byte(`{"lead_id":1,"customer_id":1,"car_id":1,"source":"fax"}`)}
	require.Error(t, cat.Prepare(&bad))
}
