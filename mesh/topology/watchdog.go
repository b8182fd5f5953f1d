package topology

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// AdvisoryPrefix is the first part of every JetStream advisory subject.
const AdvisoryPrefix = "$JS.EVENT.ADVISORY"

// AdvisoriesStream is the stream that captures the JetStream advisories of
// Sluice's streams and lane consumers for the watchdog.
func (n Names) AdvisoriesStream() string { return n.c.StreamPrefix + "_ADVISORIES" }

// WatchedStreams are the streams whose advisories the watchdog captures:
// every stage's stream (StageSpecs), then parked and alerts.
func (n Names) WatchedStreams() []string {
	var out []string
	for _, s := range stageSpecs {
		if name := s.Stream(n); !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return append(out, n.ParkedStream(), n.AlertsStream())
}

// AdvisorySubjects are the subjects the advisories stream captures: for each
// watched stream, $JS.EVENT.ADVISORY.CONSUMER.<kind>.<stream>.<consumer>
// (pause, NAK, max deliveries, terminated, created/deleted, leader elected,
// quorum lost, pinned) and $JS.EVENT.ADVISORY.STREAM.<kind>.<stream>
// (created/deleted/updated, leader elected, quorum lost). The subjects name
// the streams so that two Sluice topologies in one account do not overlap,
// and the per-request API audit advisories ($JS.EVENT.ADVISORY.API) are left
// out: they would record every info call.
func (n Names) AdvisorySubjects() []string {
	var out []string
	for _, s := range n.WatchedStreams() {
		out = append(out,
			AdvisoryPrefix+".CONSUMER.*."+s+".*",
			AdvisoryPrefix+".STREAM.*."+s,
		)
	}
	return out
}

// AdvisoriesStreamConfig is the config of the advisories stream: advisories
// are core-NATS messages sent only while someone listens, so the stream
// keeps them while the watchdog restarts. Kept 24h, at most 100k messages,
// the oldest dropped first (advisories are diagnostics, not data).
func (n Names) AdvisoriesStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.AdvisoriesStream(),
		Description: "Sluice JetStream advisories for the watchdog (24h)",
		Subjects:    n.AdvisorySubjects(),
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      24 * time.Hour,
		MaxMsgs:     100_000,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
	}
}

// EnsureWatchdog creates or updates the advisories stream. The watchdog
// calls it at start, after Ensure.
func (n Names) EnsureWatchdog(ctx context.Context, js StreamManager) error {
	cfg := n.AdvisoriesStreamConfig()
	if err := n.EnsureStream(ctx, js, cfg); err != nil {
		return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return nil
}
