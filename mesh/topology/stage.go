package topology

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/retry"
)

// Stage names a lane stage. The parked subject and consumer names use it.
type Stage string

// The lane stages (StageSpecs lists them in pipeline order).
const (
	StageEnricher   Stage = "enricher"
	StageDispatcher Stage = "dispatcher"
	StageInbound    Stage = "inbound"
)

// StageSpec is everything the mesh knows about one lane stage. Every list
// of stages (status, parked keys, metrics, partitions, the watchdog,
// repartitioning, the run wiring) iterates over StageSpecs, so a stage is
// added in one place (docs/architecture.md, "Adding a stage").
type StageSpec struct {
	// Name names the lanes (<name>-<PPP>), the parked subjects and the
	// control subject.
	Name Stage
	// Service is the stage's micro service name ($SRV.PING|INFO|STATS.<service>).
	Service string
	// Stream is the stream the stage reads.
	Stream func(n Names) string
	// StreamConfig is Stream's config.
	StreamConfig func(n Names) jetstream.StreamConfig
	// Filter is the stored subjects of partition p of Stream.
	Filter func(n Names, p int) string
	// Subject is where a message of type typ and key token tok is stored
	// for partition p in Stream (the previous stage forwards there).
	Subject func(n Names, p int, typ, keyToken string) string
	// Replay is where a parked message of the stage is re-published to go
	// through the stage again (an intake subject goes through the
	// partition transform; a stream without one gets today's partition).
	Replay func(n Names, typ, keyToken string) string
	// Intake is the producer-facing kind ("events", "inbound") of a
	// partitioned input stream: <prefix>.<intake>.<type>.<key>, closed and
	// opened by repartitioning. Empty: another stage writes Stream.
	Intake string
	// Optional stages may have no stream yet (inbound before its first
	// start): readers skip them instead of failing.
	Optional bool
	// Follows is the stage whose input partitioning this stage's stream
	// shares (the dispatcher's work queue follows the enricher's events);
	// empty for a stage with its own Intake.
	Follows Stage
	// WorkQueue is true when Stream keeps only unfinished work: it must be
	// empty before a partition switch.
	WorkQueue bool
	// Ensure creates or updates every stream and bucket the stage uses.
	Ensure func(n Names, ctx context.Context, js StreamManager) error
	// IsolateKeys: once an event of a key is parked, the key's later
	// events are parked behind it (lane.Config.IsolateKeys).
	IsolateKeys bool
	// Retry is the stage's default retry policy; the stage's config can
	// change its fields (docs/configuration.md).
	Retry retry.Policy
}

// ConsumerPrefix is the common prefix of the stage's lane consumers.
func (s StageSpec) ConsumerPrefix() string { return string(s.Name) + "-" }

var stageSpecs = []StageSpec{
	{
		Name:         StageEnricher,
		Service:      "sluice-enricher",
		Stream:       Names.EventsStream,
		StreamConfig: Names.EventsStreamConfig,
		Filter:       Names.EventsPartitionFilter,
		Subject:      func(n Names, p int, t, tok string) string { return n.partitionSubject("events", p, t, tok) },
		Replay:       func(n Names, t, tok string) string { return n.c.Prefix + ".events." + t + "." + tok },
		Intake:       "events",
		Ensure:       Names.Ensure,
		IsolateKeys:  true,
		Retry:        retry.Policy{Delay: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.25},
	},
	{
		Name:         StageDispatcher,
		Service:      "sluice-dispatcher",
		Stream:       Names.DispatchStream,
		StreamConfig: Names.DispatchStreamConfig,
		Filter:       Names.DispatchPartitionFilter,
		Subject:      Names.DispatchSubject,
		// The dispatch stream has no transform: today's count gives the
		// partition (the parked origin subject names the one at park
		// time, which a partition change may have moved).
		Replay: func(n Names, t, tok string) string {
			return n.DispatchSubject(PartitionOfToken(tok, n.Partitions()), t, tok)
		},
		Follows:     StageEnricher,
		WorkQueue:   true,
		Ensure:      Names.Ensure,
		IsolateKeys: true,
		// Fixed 2s between tries; the 3rd failure in a row pauses 10s. A
		// 401 is retried too: the credentials are fetched again.
		Retry: retry.Policy{Tries: 3, Delay: 2 * time.Second, Max: 2 * time.Second, Pause: 10 * time.Second,
			Statuses: []int{http.StatusUnauthorized}},
	},
	{
		Name:         StageInbound,
		Service:      "sluice-inbound",
		Stream:       Names.InboundStream,
		StreamConfig: Names.InboundStreamConfig,
		Filter:       Names.InboundPartitionFilter,
		Subject:      func(n Names, p int, t, tok string) string { return n.partitionSubject("inbound", p, t, tok) },
		Replay:       func(n Names, t, tok string) string { return n.c.Prefix + ".inbound." + t + "." + tok },
		Intake:       "inbound",
		Optional:     true,
		Ensure: func(n Names, ctx context.Context, js StreamManager) error {
			if err := n.Ensure(ctx, js); err != nil {
				return err
			}
			return n.EnsureInbound(ctx, js)
		},
		IsolateKeys: true,
		Retry:       retry.Policy{Delay: 200 * time.Millisecond, Max: 10 * time.Second},
	},
}

// StageSpecs returns every lane stage, in pipeline order. The slice is a
// copy.
func StageSpecs() []StageSpec { return append([]StageSpec(nil), stageSpecs...) }

// Stages returns the names of every lane stage, in pipeline order.
func Stages() []Stage {
	out := make([]Stage, len(stageSpecs))
	for i, s := range stageSpecs {
		out[i] = s.Name
	}
	return out
}

// SpecOf returns the spec of stage; ok is false for an unknown stage.
func SpecOf(stage Stage) (StageSpec, bool) {
	for _, s := range stageSpecs {
		if s.Name == stage {
			return s, true
		}
	}
	return StageSpec{}, false
}

// StageFilter returns the stream and filter subject stage reads for
// partition p ("" for an unknown stage).
func (n Names) StageFilter(stage Stage, p int) (stream, filter string) {
	s, ok := SpecOf(stage)
	if !ok {
		return "", ""
	}
	return s.Stream(n), s.Filter(n, p)
}

// IsLaneConsumer reports whether a consumer name belongs to a Sluice lane.
func IsLaneConsumer(name string) bool {
	for _, s := range stageSpecs {
		if strings.HasPrefix(name, s.ConsumerPrefix()) {
			return true
		}
	}
	return false
}

func (n Names) partitionSubject(kind string, p int, t, tok string) string {
	return n.c.Prefix + "." + kind + "." + strconv.Itoa(p) + "." + t + "." + tok
}
