package service_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/service"
	"sluice.dev/mesh/topology"
)

type doneHandler struct{}

func (doneHandler) Handle(context.Context, *lane.Msg) lane.Outcome { return lane.Done() }

// Every service has the same lifecycle: Stop before Start and Stop twice do
// nothing, Restart needs a running service, Start twice is refused.
func TestShellLifecycle(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(2))
	ctx := context.Background()

	sh, err := service.New(doneHandler{}, service.Spec{Name: "sluice-test", Short: "dispatcher", Stage: topology.StageDispatcher,
		HTTPAddr: "127.0.0.1:0", HTTP: http.NotFoundHandler()},
		service.Deps{NC: nc, JS: js, Names: names, Logger: zerolog.Nop()})
	require.NoError(t, err)
	require.NoError(t, sh.Stop(ctx))
	require.ErrorIs(t, sh.Restart(0), service.ErrNotStarted)
	require.Nil(t, sh.Done())

	require.NoError(t, sh.Start(ctx))
	require.ErrorIs(t, sh.Start(ctx), service.ErrStarted)
	require.NotEmpty(t, sh.Addr())
	require.Len(t, sh.LaneStats(), 2)
	require.NoError(t, sh.Restart(1))
	require.Equal(t, topology.StageSpecs()[1].Retry, sh.RetryPolicy(), "the stage's registered policy by default")
	resp, err := http.Get("http://" + sh.Addr() + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	require.NoError(t, sh.Stop(ctx))
	require.NoError(t, sh.Stop(ctx))
	require.ErrorIs(t, sh.Restart(0), service.ErrNotStarted)
	require.Empty(t, sh.LaneStats())
}

// A service whose NATS connection closes for good reports it on Done.
func TestShellReportsClosedConnection(t *testing.T) {
	s := meshtest.RunServer(t, "")
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(1))
	sh, err := service.New(service.NoLanes{}, service.Spec{Name: "sluice-test"},
		service.Deps{NC: nc, JS: js, Names: names, Logger: zerolog.Nop()})
	require.NoError(t, err)
	require.NoError(t, sh.Start(context.Background()))
	nc.Close()
	select {
	case err := <-sh.Done():
		require.ErrorContains(t, err, "NATS connection closed")
	case <-time.After(10 * time.Second):
		t.Fatal("no crash reported")
	}
	require.NoError(t, sh.Stop(context.Background()))
}

// New names what is missing, whatever the service.
func TestShellNewRefusesMissingDeps(t *testing.T) {
	_, err := service.New(service.NoLanes{}, service.Spec{Name: "sluice-x", Short: "x"}, service.Deps{})
	require.ErrorContains(t, err, "x: Deps.NC and Deps.JS are required")
	require.ErrorContains(t, err, "x: Deps.Names")
}
