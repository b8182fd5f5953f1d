package app

import (
	"context"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// cliServer starts a server with a fresh topology of the given partition
// count, creates its streams and points the CLI's config at it.
func cliServer(t *testing.T, partitions int) (jetstream.JetStream, topology.Names) {
	t.Helper()
	cleanEnv(t)
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	tc := meshtest.Topology(partitions)
	names := topology.New(tc)
	require.NoError(t, names.Ensure(context.Background(), js))
	pointCLI(t, s.ClientURL(), tc)
	return js, names
}

// pointCLI sets the SLUICE_* variables that make the CLI's commands use the
// NATS at url with topology tc and a temporary data_dir.
func pointCLI(t *testing.T, url string, tc topology.Config) {
	t.Helper()
	t.Setenv("SLUICE_NATS_URL", url)
	t.Setenv("SLUICE_TOPOLOGY_PREFIX", tc.Prefix)
	t.Setenv("SLUICE_TOPOLOGY_STREAM_PREFIX", tc.StreamPrefix)
	t.Setenv("SLUICE_TOPOLOGY_PARTITIONS", strconv.Itoa(tc.Partitions))
	t.Setenv("SLUICE_DATA_DIR", t.TempDir())
}
