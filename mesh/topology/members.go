package topology

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Lane members.
//
// With lane balancing on (lane.Config.Balance, topology.balance_replicas),
// each running lane group of a stage heartbeats its member id into the
// members bucket and watches its stage's members, so that the live replicas
// of a stage can spread the stage's lanes between them (mesh/lane
// balance.go). The bucket holds no state worth keeping: it is in memory,
// keeps the latest value per key, and a member's entry ages out a few
// heartbeats after the member stops writing it.

// MembersBucket is the KV bucket of lane group members:
// "<stream_prefix lower>_lane_members".
func (n Names) MembersBucket() string {
	return strings.ToLower(n.c.StreamPrefix) + "_lane_members"
}

// MemberHeartbeat is how often a lane group rewrites its member entry:
// PinnedTTL/5, at least 500ms. A member not heard of for MemberTimeout is
// taken for gone.
func (n Names) MemberHeartbeat() time.Duration {
	return max(500*time.Millisecond, n.c.PinnedTTL/5)
}

// MemberTimeout is how long after its last heartbeat a member is taken for
// gone: three heartbeats.
func (n Names) MemberTimeout() time.Duration { return 3 * n.MemberHeartbeat() }

// MembersConfig is the config of the members bucket: one entry per live
// lane group, the latest value only, removed by the server after twice
// PinnedTTL without a heartbeat (readers use MemberTimeout, which is
// shorter). In memory: a restarted server loses nothing that the members do
// not rewrite within a heartbeat.
func (n Names) MembersConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      n.MembersBucket(),
		Description: "Sluice lane group members (heartbeats)",
		History:     1,
		TTL:         2 * max(n.c.PinnedTTL, n.MemberTimeout()),
		Storage:     jetstream.MemoryStorage,
		Replicas:    n.c.Replicas,
	}
}

// MemberKey is the members bucket key of stage's member id.
func MemberKey(stage Stage, id string) string { return string(stage) + "." + id }

// Member is the value of a member entry.
type Member struct {
	// Partitions lists the partitions the member runs (all when empty).
	Partitions []int `json:"partitions,omitempty"`
	// Host is the member's host name, for operators.
	Host string `json:"host,omitempty"`
	// Started is when the member's group started.
	Started time.Time `json:"started,omitzero"`
}
