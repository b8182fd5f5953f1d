package dispatcher_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

func TestNewAndStartRefuseBadSetups(t *testing.T) {
	t.Parallel()
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(2))
	cfg := fast("http://127.0.0.1:1")
	cases := []struct {
		name string
		cfg  dispatcher.Config
		deps dispatcher.Deps
		want string
	}{
		{"no url", dispatcher.Config{}, dispatcher.Deps{NC: nc, JS: js, Names: names}, "dispatcher.crm.url: required"},
		{"no nats", cfg, dispatcher.Deps{Names: names}, "Deps.NC and Deps.JS are required"},
		{"no names", cfg, dispatcher.Deps{NC: nc, JS: js}, "Deps.Names"},
		{"partition", cfg, dispatcher.Deps{NC: nc, JS: js, Names: names, Partitions: []int{2}}, "Deps.Partitions: 2 out of range 0..1"},
	}
	for _, tc := range cases {
		_, err := dispatcher.New(tc.cfg, tc.deps)
		require.ErrorContains(t, err, tc.want, tc.name)
	}

	// Like every stage, Start ensures its streams and buckets (the CRM id
	// bucket included); Stop and Restart before Start behave as everywhere.
	svc, err := dispatcher.New(cfg, dispatcher.Deps{NC: nc, JS: js, Names: names, Logger: zerolog.Nop(), Partitions: []int{1}})
	require.NoError(t, err)
	require.NoError(t, svc.Stop(context.Background()))
	require.ErrorIs(t, svc.Restart(1), dispatcher.ErrNotStarted)
	require.NoError(t, svc.Start(context.Background()))
	_, err = js.KeyValue(context.Background(), names.CRMIDBucket())
	require.NoError(t, err)
	require.Len(t, svc.Stats().Lanes, 1)
	require.Equal(t, 1, svc.Stats().Lanes[0].Partition)
	require.NoError(t, svc.Stop(context.Background()))
}
