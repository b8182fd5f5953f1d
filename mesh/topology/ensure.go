package topology

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamManager is the part of jetstream.JetStream that Ensure needs.
type StreamManager interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

func (n Names) storage() jetstream.StorageType {
	if n.c.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// EventsStreamConfig is the config of the accepted-events stream.
func (n Names) EventsStreamConfig() jetstream.StreamConfig {
	return n.partitionedStream(n.EventsStream(), "events", n.EventsTransformDest(),
		"Sluice accepted events, %[2]d partitions (%[1]s.events.>)")
}

// Descriptions are short (`nats stream ls` and `nats consumer ls` show them
// in a column, fitting ~120 columns); what each stream holds and who reads
// it is in docs/architecture.md.

// partitionedStream is the config shared by the streams producers publish
// to as <prefix>.<kind>.<type>.<key> and lanes read per partition: kept for
// EventsMaxAge, refused when full (DiscardNew), deduplicated, with the
// partition transform. description is a format with %[1]s = prefix and
// %[2]d = partitions.
func (n Names) partitionedStream(name, kind, dest, description string) jetstream.StreamConfig {
	ingest := n.c.Prefix + "." + kind + ".*.*"
	return jetstream.StreamConfig{
		Name:        name,
		Description: fmt.Sprintf(description, n.c.Prefix, n.c.Partitions),
		Subjects:    []string{ingest},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      n.c.EventsMaxAge,
		MaxBytes:    n.c.MaxBytes,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
		Duplicates:  n.c.DuplicateWindow,
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      ingest,
			Destination: dest,
		},
	}
}

// DispatchStreamConfig is the config of the CRM-request stream. It is a work
// queue: a request leaves the stream when the CRM accepted it.
func (n Names) DispatchStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.DispatchStream(),
		Description: "Sluice CRM requests (work queue, removed on CRM 2xx)",
		Subjects:    []string{n.c.Prefix + ".dispatch.*.*.*"},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    n.c.MaxBytes,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
		Duplicates:  n.c.DuplicateWindow,
	}
}

// ParkedStreamConfig is the config of the parked-events stream.
func (n Names) ParkedStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.ParkedStream(),
		Description: "Sluice parked events (kept until an operator acts)",
		Subjects:    []string{n.c.Prefix + ".parked.>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
		Duplicates:  n.c.DuplicateWindow,
	}
}

// AlertsStreamConfig is the config of the alerts stream.
func (n Names) AlertsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.AlertsStream(),
		Description: "Sluice alerts: pauses, parks, stalls (7 days)",
		Subjects:    []string{n.c.Prefix + ".alerts.>"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
	}
}

// AuditStreamConfig is the config of the operator-action audit stream.
func (n Names) AuditStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.AuditStream(),
		Description: "Sluice operator actions (audit trail)",
		Subjects:    []string{n.c.Prefix + ".audit.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
	}
}

// Ensure creates or updates every stream and KV bucket of the topology. It is
// idempotent and safe to call from every service at start. It refuses to
// change the partition count of an existing events stream.
func (n Names) Ensure(ctx context.Context, js StreamManager) error {
	if err := n.checkPartitions(ctx, js, n.EventsStream(), n.EventsTransformDest()); err != nil {
		return err
	}
	for _, cfg := range []jetstream.StreamConfig{
		n.EventsStreamConfig(), n.DispatchStreamConfig(), n.ParkedStreamConfig(), n.AlertsStreamConfig(),
		n.AuditStreamConfig(),
	} {
		if err := n.EnsureStream(ctx, js, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	err := n.ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      n.CRMIDBucket(),
		Description: "Sluice CRM record ids by entity key",
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
	})
	if err != nil {
		return fmt.Errorf("ensure kv %s: %w", n.CRMIDBucket(), err)
	}
	if err := n.ensureKV(ctx, js, n.ParkedKeysConfig()); err != nil {
		return fmt.Errorf("ensure kv %s: %w", n.ParkedKeysBucket(), err)
	}
	if err := n.ensureKV(ctx, js, n.FenceConfig()); err != nil {
		return fmt.Errorf("ensure kv %s: %w", n.FenceBucket(), err)
	}
	return nil
}

func (n Names) checkPartitions(ctx context.Context, js StreamManager, stream, want string) error {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", stream, err)
	}
	st := s.CachedInfo().Config.SubjectTransform
	if st == nil {
		return nil
	}
	if st.Destination != want {
		return fmt.Errorf("%w: stream %s has transform %q, config wants %q (topology.partitions); "+
			"follow \"Changing the partition count\" in docs/runbook.md", ErrPartitionsChanged,
			stream, st.Destination, want)
	}
	return nil
}

// LaneConsumerConfig is the durable ordered consumer of stage for partition
// p on the given stream and filter. It is pinned (PriorityPolicyPinned,
// group LanePriorityGroup): however many replicas of the service pull from
// it, the server delivers to one of them until that one stops pulling for
// PinnedTTL. It starts at the beginning of the stream (DeliverAll); a
// consumer recreated after a deletion starts after the lane's fence instead
// (LaneRecreateConfig).
//
// On a work-queue stream (StageSpec.WorkQueue: the dispatcher's) the
// consumer keeps its state in memory (MemoryStorage): the stream itself is
// the lane's position there (an ack removes the message), so the state
// the server would otherwise rewrite to a file up to ten times a second
// per consumer (open, write, rename) holds nothing the stream does not.
// A NATS server restart then loses the consumer (a cluster keeps it while
// one replica lives); the lane recreates it and goes on at the stream's
// first message, which is the first one not yet acked. What is lost is
// the server's delivery count (the lane counts the first message of a new
// incarnation as delivered before) and the outlet's own pause (a paused
// lane tries once more and pauses again); an operator's pause is taken
// over from the audit stream (WithOperatorPause).
func (n Names) LaneConsumerConfig(stage Stage, p int, filter string) jetstream.ConsumerConfig {
	spec, _ := SpecOf(stage)
	return jetstream.ConsumerConfig{
		MemoryStorage:  spec.WorkQueue,
		Durable:        n.ConsumerName(stage, p),
		Description:    fmt.Sprintf("Sluice %s lane %d/%d (ordered, pinned)", stage, p, n.c.Partitions),
		FilterSubject:  filter,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        n.c.AckWait,
		MaxAckPending:  1,
		MaxDeliver:     -1,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		Replicas:       0,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{LanePriorityGroup},
		PinnedTTL:      n.c.PinnedTTL,
	}
}
