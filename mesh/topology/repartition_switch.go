package topology

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SwitchResult is what SwitchPartitions did.
type SwitchResult struct {
	From int `json:"from"`
	To   int `json:"to"`
	// NoChange: the streams and lanes already had To partitions.
	NoChange bool     `json:"no_change,omitempty"`
	Deleted  []string `json:"deleted"`
	Created  []string `json:"created"`
	// Start maps each input stream to the first sequence its new lanes read.
	Start map[string]uint64 `json:"start"`
	// FencesWritten is the number of lane fences set to where the new
	// lanes start; FencesRemoved the number of fences of other lanes removed.
	FencesWritten int `json:"fences_written"`
	FencesRemoved int `json:"fences_removed"`
	// Paused lists the old lanes that were paused; the new lanes are not.
	Paused []string `json:"paused,omitempty"`
}

// SwitchPartitions changes the partition count of the topology to to. It
// refuses unless intake is closed (ErrIntakeOpen), every lane is drained and
// the dispatch queue empty (ErrNotDrained), and no lane consumer has a
// client (ErrLanesInUse: stop the services first). It then
//
//   - points the input streams' transforms at to partitions, marking the
//     switch on each stream (MetaSwitch) so that an interrupted switch can
//     be run again;
//   - checks that nothing was stored meanwhile (else rolls the transforms
//     back: ErrNotDrained);
//   - sets the lane fences (fence.go) of the new lanes to where they start
//     and removes the others: an old lane's fence belongs to a partition
//     that held other keys;
//   - deletes every lane consumer of every stage (any count) and creates
//     the lanes of the new count, the input stages' ones starting after the
//     stored history (their filters match old events of other keys);
//   - removes the marks. Intake stays closed: the services' Ensure or
//     OpenIntake opens it.
//
// Running it again after it completed changes nothing (NoChange).
func (n Names) SwitchPartitions(ctx context.Context, js RepartitionJS, to int) (SwitchResult, error) {
	res := SwitchResult{To: to, Start: map[string]uint64{}}
	if to < 1 || to > 1024 {
		return res, fmt.Errorf("partition count %d is out of range 1..1024", to)
	}
	st, err := n.ReadPartitionState(ctx, js)
	if err != nil {
		return res, err
	}
	res.From = st.Partitions()
	for _, in := range st.Inputs {
		if in.Switch != nil {
			if in.Switch.To != to {
				return res, fmt.Errorf("%w: %s records a switch %s; run the switch to %d first",
					ErrSwitchUnfinished, in.Stream, in.Switch, in.Switch.To)
			}
			res.From = in.Switch.From
		}
	}
	switch {
	case st.Open():
		return res, fmt.Errorf("%w: close it and drain first (sluice partitions drain)", ErrIntakeOpen)
	case !st.Drained():
		return res, fmt.Errorf("%w: %s", ErrNotDrained, strings.Join(st.Blockers, "; "))
	case len(st.InUse()) > 0:
		return res, fmt.Errorf("%w: %s have clients pulling; stop every Sluice service first",
			ErrLanesInUse, strings.Join(st.InUse(), ", "))
	}
	if n.switched(st, to) {
		res.NoChange = true
		return res, nil
	}
	nn := n.WithPartitions(to)
	olds, err := n.retarget(ctx, js, nn, res.From, &res)
	if err != nil {
		return res, errors.Join(err, n.rollback(ctx, js, olds))
	}
	for _, l := range st.Lanes {
		if l.PausedUntil != nil {
			res.Paused = append(res.Paused, l.Consumer)
		}
	}
	if res.FencesWritten, res.FencesRemoved, err = n.resetLaneFences(ctx, js, nn, res.Start); err != nil {
		return res, fmt.Errorf("reset lane fences (run the switch again): %w", err)
	}
	if err := n.replaceLanes(ctx, js, nn, st, &res); err != nil {
		return res, fmt.Errorf("replace lane consumers (run the switch again): %w", err)
	}
	for stream := range res.Start {
		if err := setMeta(ctx, js, stream, MetaSwitch, ""); err != nil {
			return res, fmt.Errorf("finish switch on %s (run the switch again): %w", stream, err)
		}
	}
	return res, nil
}

// switched reports that every input and lane already has to partitions.
func (n Names) switched(st PartitionState, to int) bool {
	lanes := map[Stage]int{}
	for _, l := range st.Lanes {
		if l.Stray || l.Partition >= to {
			return false
		}
		lanes[l.Stage]++
	}
	for _, in := range st.Inputs {
		if in.Partitions != to || in.Switch != nil || lanes[in.Stage] != to {
			return false
		}
	}
	for _, s := range stageSpecs {
		if s.Follows != "" && lanes[s.Name] != to {
			return false
		}
	}
	return true
}

// retarget points each input stream's transform at nn's count and marks the
// switch, then checks that nothing was stored since. It returns the old
// configs for a rollback.
func (n Names) retarget(ctx context.Context, js RepartitionJS, nn Names, from int, res *SwitchResult) (map[string]jetstream.StreamConfig, error) {
	olds := map[string]jetstream.StreamConfig{}
	for _, in := range n.inputs() {
		s, err := js.Stream(ctx, in.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) && !in.required {
			continue
		}
		if err != nil {
			return olds, fmt.Errorf("stream %s: %w", in.stream, err)
		}
		info := s.CachedInfo()
		start := info.State.LastSeq + 1
		cfg := info.Config
		want := nn.inputConfig(in)
		cfg.SubjectTransform, cfg.Description = want.SubjectTransform, want.Description
		cfg.Metadata = withMeta(cfg.Metadata, MetaSwitch, SwitchMark{From: from, To: nn.c.Partitions, Start: start}.String())
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return olds, fmt.Errorf("update transform of %s: %w", in.stream, err)
		}
		olds[in.stream] = info.Config
		res.Start[in.stream] = start
	}
	for stream, start := range res.Start {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return olds, fmt.Errorf("stream %s: %w", stream, err)
		}
		info := s.CachedInfo()
		if info.State.LastSeq+1 != start || !slices.Contains(info.Config.Subjects, nn.IntakeClosedSubject(kindOf(n, stream))) {
			return olds, fmt.Errorf("%w: %s stored events or reopened while switching (a service started?); "+
				"the transforms were rolled back: stop every service and drain again", ErrNotDrained, stream)
		}
	}
	return olds, nil
}

func kindOf(n Names, stream string) string {
	for _, in := range n.inputs() {
		if in.stream == stream {
			return in.kind
		}
	}
	return ""
}

// rollback restores the input streams' configs.
func (n Names) rollback(ctx context.Context, js RepartitionJS, olds map[string]jetstream.StreamConfig) error {
	var errs []error
	for stream, cfg := range olds {
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			errs = append(errs, fmt.Errorf("roll back %s: %w", stream, err))
		}
	}
	return errors.Join(errs...)
}

// replaceLanes deletes every lane consumer of each stage and creates nn's.
// The lanes of an input stage start at res.Start of their stream; the
// dispatcher's work queue is empty, so its lanes start at its beginning.
func (n Names) replaceLanes(ctx context.Context, js RepartitionJS, nn Names, st PartitionState, res *SwitchResult) error {
	for _, spec := range stageSpecs {
		stage, stream := spec.Name, spec.Stream(n)
		if _, err := js.Stream(ctx, stream); errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		} else if err != nil {
			return fmt.Errorf("stream %s: %w", stream, err)
		}
		for _, l := range st.Lanes {
			if l.Stage != stage {
				continue
			}
			if err := js.DeleteConsumer(ctx, l.Stream, l.Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return fmt.Errorf("delete %s on %s: %w", l.Consumer, l.Stream, err)
			}
			res.Deleted = append(res.Deleted, l.Consumer)
		}
		start, fromStart := res.Start[stream]
		for p := range nn.c.Partitions {
			_, filter := nn.StageFilter(stage, p)
			cfg := nn.LaneConsumerConfig(stage, p, filter)
			if _, err := js.CreateOrUpdateConsumer(ctx, stream, cfg); err != nil {
				return fmt.Errorf("create %s on %s: %w", cfg.Durable, stream, err)
			}
			if fromStart {
				if _, err := js.ResetConsumerToSequence(ctx, stream, cfg.Durable, start); err != nil {
					// Never leave a lane that would re-read the history.
					_ = js.DeleteConsumer(ctx, stream, cfg.Durable)
					return fmt.Errorf("start %s on %s at sequence %d: %w", cfg.Durable, stream, start, err)
				}
			}
			res.Created = append(res.Created, cfg.Durable)
		}
	}
	return nil
}

// resetLaneFences sets the fence of every lane of the new count to the
// last sequence before its start (nothing after it was applied; a lane
// consumer recreated after a deletion then starts there, not after an old
// lane's fence — whose partition held other keys — nor at the start of the
// stream) and removes the fences of every other lane. It returns the
// number of fences written and removed.
func (n Names) resetLaneFences(ctx context.Context, js RepartitionJS, nn Names, starts map[string]uint64) (written, removed int, err error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, n.FenceConfig())
	if err != nil {
		return 0, 0, fmt.Errorf("fence bucket: %w", err)
	}
	want := map[string]Fence{}
	now := time.Now().UTC()
	for _, spec := range stageSpecs {
		stage, stream := spec.Name, spec.Stream(n)
		s, err := js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		} else if err != nil {
			return 0, 0, fmt.Errorf("stream %s: %w", stream, err)
		}
		info := s.CachedInfo()
		seq := info.State.LastSeq
		if start, ok := starts[stream]; ok {
			seq = start - 1
		}
		for p := range nn.c.Partitions {
			want[FenceKey(stage, p)] = Fence{Seq: seq, StreamCreated: info.Created, At: now}
		}
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, 0, fmt.Errorf("list fences: %w", err)
	}
	var stale []string
	if lister != nil {
		for k := range lister.Keys() {
			if _, ok := want[k]; !ok {
				stale = append(stale, k)
			}
		}
		_ = lister.Stop()
	}
	for _, k := range stale {
		if err := kv.Purge(ctx, k); err != nil {
			return written, removed, fmt.Errorf("remove fence %s: %w", k, err)
		}
		removed++
	}
	for k, f := range want {
		if _, err := kv.Put(ctx, k, f.Marshal()); err != nil {
			return written, removed, fmt.Errorf("write fence %s: %w", k, err)
		}
		written++
	}
	return written, removed, nil
}

// setMeta sets (or with v "" removes) one metadata key of a stream.
func setMeta(ctx context.Context, js RepartitionJS, stream, key, v string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	cfg.Metadata = withMeta(cfg.Metadata, key, v)
	_, err = js.UpdateStream(ctx, cfg)
	return err
}
