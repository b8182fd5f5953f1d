package app

import (
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
	"sluice.dev/mesh/topology"
)

// Every registered stage is wired into `sluice run`, under the micro
// service name its package registers.
func TestEveryStageIsWired(t *testing.T) {
	pkgName := map[topology.Stage]string{topology.StageEnricher: enricher.ServiceName,
		topology.StageDispatcher: dispatcher.ServiceName, topology.StageInbound: inbound.ServiceName}
	for _, spec := range topology.StageSpecs() {
		w, ok := stageWirings[spec.Name]
		require.True(t, ok, "stage %s has no wiring in stages.go", spec.Name)
		require.NotNil(t, w.open, spec.Name)
		require.NotNil(t, w.runs, spec.Name)
		require.Equal(t, pkgName[spec.Name], spec.Service, spec.Name)
	}
	require.Len(t, stageWirings, len(topology.StageSpecs()))
}
