package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/leaderkv"
)

// LanePriorityGroup is the priority group every lane consumer is pinned in
// and every lane pulls with (jetstream.PullPriorityGroup).
const LanePriorityGroup = "lane"

// Lane fences.
//
// A lane's fence is the last stream sequence any replica of its service
// applied (settled with an ack: done, forwarded or parked), kept in the
// fence bucket under FenceKey. Lanes use it to recognise a late duplicate —
// a message another replica already applied, still in the hands of a
// replica that lost its pin — and to recreate a deleted consumer where the
// lane left off rather than at the start of the stream. Fences are written
// by the lane runner (mesh/lane), asynchronously and coalesced.

// FenceBucket is the KV bucket of lane fences: "<stream_prefix lower>_lane_fence".
func (n Names) FenceBucket() string {
	return strings.ToLower(n.c.StreamPrefix) + "_lane_fence"
}

// FenceConfig is the config of the fence bucket: one entry per lane, the
// latest value only.
func (n Names) FenceConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      n.FenceBucket(),
		Description: "Sluice lane fences (last sequence applied)",
		History:     1,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
	}
}

// FenceKey is the fence bucket key of stage's lane p.
func FenceKey(stage Stage, p int) string { return string(stage) + "." + strconv.Itoa(p) }

// Fence is the value of a lane's fence.
type Fence struct {
	// Seq is the last stream sequence applied on the lane.
	Seq uint64 `json:"seq"`
	// StreamCreated is the creation time of the stream Seq belongs to: a
	// deleted and recreated stream numbers its messages from 1 again, so a
	// fence of an earlier stream is no fence at all.
	StreamCreated time.Time `json:"stream_created"`
	// Pin is the pin id (Nats-Pin-Id) the replica held when it applied Seq,
	// for operators comparing with `nats consumer info`.
	Pin string `json:"pin,omitempty"`
	// At is when the replica wrote the value.
	At time.Time `json:"at,omitzero"`
}

// ParseFence decodes a fence bucket value.
func ParseFence(b []byte) (Fence, error) {
	var f Fence
	if err := json.Unmarshal(b, &f); err != nil {
		return Fence{}, fmt.Errorf("topology: bad fence value: %w", err)
	}
	return f, nil
}

// Marshal encodes f for the fence bucket.
func (f Fence) Marshal() []byte {
	b, _ := json.Marshal(f)
	return b
}

// For returns f's sequence if f belongs to the stream created at created,
// else 0 (no fence).
func (f Fence) For(created time.Time) uint64 {
	if f.StreamCreated.Equal(created) {
		return f.Seq
	}
	return 0
}

// Newer reports whether f supersedes g: a later stream, or a higher
// sequence in the same stream.
func (f Fence) Newer(g Fence) bool {
	if !f.StreamCreated.Equal(g.StreamCreated) {
		return f.StreamCreated.After(g.StreamCreated)
	}
	return f.Seq > g.Seq
}

// ResumeAfter returns cfg starting after fence (DeliverByStartSequence
// fence+1) on a stream with the given retention, or cfg unchanged
// (DeliverAll) when fence is 0 or the stream is a work queue: a work queue
// keeps only the messages not yet applied (an ack removes one) and accepts
// DeliverAll consumers only.
func ResumeAfter(cfg jetstream.ConsumerConfig, fence uint64, retention jetstream.RetentionPolicy) jetstream.ConsumerConfig {
	if fence == 0 || retention == jetstream.WorkQueuePolicy {
		return cfg
	}
	cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
	cfg.OptStartSeq = fence + 1
	cfg.OptStartTime = nil
	return cfg
}

// FenceSource is the part of jetstream.JetStream that reads a fence.
type FenceSource interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// LaneFence reads the fence of stage's lane p as it applies to the lane's
// stream today: 0 when there is none (no bucket, no entry, or an entry of
// an earlier incarnation of the stream).
func (n Names) LaneFence(ctx context.Context, js FenceSource, stage Stage, p int) (uint64, error) {
	fence, _, err := n.laneFence(ctx, js, stage, p)
	return fence, err
}

func (n Names) laneFence(ctx context.Context, js FenceSource, stage Stage, p int) (uint64, *jetstream.StreamInfo, error) {
	stream, _ := n.StageFilter(stage, p)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info := s.CachedInfo()
	kv, err := js.KeyValue(ctx, n.FenceBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, info, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("fence bucket: %w", err)
	}
	e, err := leaderkv.Wrap(kv, js).Get(ctx, FenceKey(stage, p))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, info, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("fence %s: %w", FenceKey(stage, p), err)
	}
	f, err := ParseFence(e.Value())
	if err != nil {
		return 0, nil, err
	}
	return f.For(info.Created), info, nil
}

// LaneRecreateConfig is the config to recreate stage's lane consumer p
// after it was deleted: LaneConsumerConfig starting after the lane's fence,
// so the lane goes on where it left off instead of re-sending the stream's
// whole history. Without a fence, or on a work-queue stream (which holds
// only what is not applied yet), it starts at the beginning. It fails when
// the fence cannot be read: recreating from the beginning then could re-send
// days of events. An operator's pause of the consumer that is still running
// is taken over (WithOperatorPause); it fails when that cannot be read.
func (n Names) LaneRecreateConfig(ctx context.Context, js FenceSource, stage Stage, p int) (jetstream.ConsumerConfig, error) {
	_, filter := n.StageFilter(stage, p)
	fence, info, err := n.laneFence(ctx, js, stage, p)
	if err != nil {
		return jetstream.ConsumerConfig{}, err
	}
	return n.WithOperatorPause(ctx, js, ResumeAfter(n.LaneConsumerConfig(stage, p, filter), fence, info.Config.Retention))
}
