package app

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
	"sluice.dev/mesh/meshtest"
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

// The CRM counters are exported once per process: by the dispatcher stage
// where it runs (its sends and the inline outlet's), else by the enricher
// stage, whose inline outlet sends (`sluice run --target enricher` with
// dispatcher.inline); an enricher without an outlet exports no samples.
func TestCRMCountersFollowTheProcessThatSends(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	out, err := dispatcher.NewOutlet(dispatcher.Config{CRM: dispatcher.CRMConfig{URL: "http://127.0.0.1:1"}},
		dispatcher.Deps{NC: nc, JS: js, Names: topology.New(meshtest.Topology(1)), Logger: zerolog.Nop()})
	require.NoError(t, err)

	// register registers target's CRM counters (a duplicate fails) and
	// returns the sluice_dispatcher_ families gathered (gather: no
	// dispatcher stage, whose counters read its running service).
	register := func(target string, withOutlet, gather bool) []string {
		st := &stats{target: target}
		if withOutlet {
			st.outlet.Store(out)
		}
		reg := prometheus.NewRegistry()
		for _, stage := range []topology.Stage{topology.StageEnricher, topology.StageDispatcher} {
			if !stageWirings[stage].runs(Config{}, target) {
				continue
			}
			for _, c := range stageWirings[stage].collectors(func() laneService { return nil }, st) {
				if crmCounter(c) {
					require.NoError(t, reg.Register(c), "target %s", target)
				}
			}
		}
		if !gather {
			return nil
		}
		mfs, err := reg.Gather()
		require.NoError(t, err)
		var got []string
		for _, mf := range mfs {
			got = append(got, mf.GetName())
		}
		return got
	}
	require.Equal(t, []string{"sluice_dispatcher_delivered_total"}, register("enricher", true, true))
	require.Empty(t, register("enricher", false, true))
	register("all", true, false)
}

// crmCounter reports whether c collects sluice_crm_ or sluice_dispatcher_
// families.
func crmCounter(c prometheus.Collector) bool {
	ch := make(chan *prometheus.Desc, 4)
	go func() { c.Describe(ch); close(ch) }()
	found := false
	for d := range ch {
		s := d.String()
		found = found || strings.Contains(s, `"sluice_crm_`) || strings.Contains(s, `"sluice_dispatcher_`)
	}
	return found
}
