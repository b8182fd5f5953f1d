package topology

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Inbound subjects (CRM webhooks on their way into the product database):
//
//	<prefix>.inbound.<type>.<key>       the inbound receiver publishes here (Nats-Msg-Id = webhook id)
//	<prefix>.inbound.<P>.<type>.<key>   stored subject after the partition transform
//
// The key is the entity the webhook changes ("lead:42"), so every update of
// one entity is written in order by one inbound lane.

// InboundStream is the stream of received CRM webhooks.
func (n Names) InboundStream() string { return n.c.StreamPrefix + "_INBOUND" }

// InboundSubject is where the receiver publishes a webhook item of type t
// for entity key key. The key is escaped with KeyToken.
func (n Names) InboundSubject(t, key string) string {
	return n.c.Prefix + ".inbound." + t + "." + KeyToken(key)
}

// InboundIngestFilter matches every subject the receiver publishes to.
func (n Names) InboundIngestFilter() string { return n.c.Prefix + ".inbound.*.*" }

// InboundPartitionFilter matches the stored webhooks of partition p.
func (n Names) InboundPartitionFilter(p int) string {
	return n.c.Prefix + ".inbound." + strconv.Itoa(p) + ".>"
}

// InboundTransformDest inserts the partition token (FNV-1a of the key token
// mod N, as for events).
func (n Names) InboundTransformDest() string {
	return fmt.Sprintf("%s.inbound.{{partition(%d,2)}}.{{wildcard(1)}}.{{wildcard(2)}}", n.c.Prefix, n.c.Partitions)
}

// InboundStreamConfig is the config of the inbound webhook stream. It keeps
// webhooks for EventsMaxAge (history and replay); the writer's
// applied-events table makes a replay harmless.
func (n Names) InboundStreamConfig() jetstream.StreamConfig {
	return n.partitionedStream(n.InboundStream(), "inbound", n.InboundTransformDest(),
		"Sluice CRM webhooks in, %[2]d partitions (%[1]s.inbound.>)")
}

// EnsureInbound creates or updates the inbound stream. It is idempotent and
// refuses to change the partition count of an existing inbound stream
// (ErrPartitionsChanged). Call Ensure as well for the parked and alerts
// streams the inbound lanes use.
func (n Names) EnsureInbound(ctx context.Context, js StreamManager) error {
	if err := n.checkPartitions(ctx, js, n.InboundStream(), n.InboundTransformDest()); err != nil {
		return err
	}
	if err := n.EnsureStream(ctx, js, n.InboundStreamConfig()); err != nil {
		return fmt.Errorf("ensure stream %s: %w", n.InboundStream(), err)
	}
	return nil
}
