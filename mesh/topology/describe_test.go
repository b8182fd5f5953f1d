package topology_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// maxDescription keeps `nats stream ls` / `nats consumer ls` within ~120
// columns: the description is one column of several. Details live in
// docs/architecture.md.
const maxDescription = 56

func TestDescriptionsAreShort(t *testing.T) {
	names := topology.New(topology.Config{Prefix: "sluice", StreamPrefix: "SLUICE", Partitions: 16}.WithDefaults())
	streams := []jetstream.StreamConfig{names.EventsStreamConfig(), names.DispatchStreamConfig(),
		names.ParkedStreamConfig(), names.AlertsStreamConfig(), names.AuditStreamConfig(),
		names.InboundStreamConfig(), names.AdvisoriesStreamConfig(), names.LedgerStreamConfig(time.Hour, 1<<30)}
	for _, c := range streams {
		if c.Description == "" || len(c.Description) > maxDescription {
			t.Errorf("stream %s: description of %d characters (1..%d): %q", c.Name, len(c.Description), maxDescription, c.Description)
		}
	}
	for _, c := range []jetstream.KeyValueConfig{names.FenceConfig(), names.MembersConfig(), names.ParkedKeysConfig()} {
		if c.Description == "" || len(c.Description) > maxDescription {
			t.Errorf("kv %s: description of %d characters: %q", c.Bucket, len(c.Description), c.Description)
		}
	}
	for _, stage := range []topology.Stage{topology.StageEnricher, topology.StageDispatcher} {
		_, filter := names.StageFilter(stage, 15)
		c := names.LaneConsumerConfig(stage, 15, filter)
		if len(c.Description) > maxDescription {
			t.Errorf("consumer %s: description of %d characters: %q", c.Durable, len(c.Description), c.Description)
		}
	}
}
