package topology

// Changing the partition count (docs/scaling.md, "Changing the partition
// count"). A key's partition is FNV-1a(key) mod N, so a new N moves keys to
// other lanes; per-key order survives only if no key still has an event in
// an old lane when the new lanes start. The steps, each refusing what is
// unsafe:
//
//  1. CloseIntake: the partitioned input streams (events, inbound) stop
//     binding their producer subjects. A publish then gets "no responders"
//     (no ack), which producers retry with the same id; nothing new is
//     accepted and nothing accepted is dropped.
//  2. The running services drain every lane; ReadPartitionState reports
//     what is left (Drained).
//  3. The services stop. SwitchPartitions re-points the transforms to the
//     new count and replaces the lane consumers with ones of the new count
//     that start after the stored history (a lane consumer delivers from
//     the start of its filter, which holds old events of other keys).
//  4. The services start with topology.partitions = N: their Ensure binds
//     the producer subjects again (OpenIntake does it without a service).

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrIntakeOpen means an input stream still accepts events. The caller
	// closes intake and drains (sluice partitions drain) before switching.
	ErrIntakeOpen = errors.New("topology: intake is open")
	// ErrNotDrained means a lane still holds events, the dispatch queue is
	// not empty, or an event was stored while the switch ran (the switch was
	// rolled back). The caller waits for the drain and tries again.
	ErrNotDrained = errors.New("topology: lanes are not drained")
	// ErrLanesInUse means a lane consumer has clients pulling from it: a
	// service still runs. The caller stops every Sluice service first.
	ErrLanesInUse = errors.New("topology: lane consumers are in use")
	// ErrSwitchUnfinished means an input stream records a partition switch
	// that did not complete. The caller runs the switch to that count again.
	ErrSwitchUnfinished = errors.New("topology: a partition switch is unfinished")
)

// Metadata keys Sluice sets on its input streams while repartitioning.
const (
	// MetaIntake is set while intake is closed: when, by whom and why.
	MetaIntake = "sluice.intake"
	// MetaSwitch is set while a switch runs: "from=<M> to=<N> start=<seq>".
	MetaSwitch = "sluice.switch"
)

// RepartitionJS is the part of jetstream.JetStream repartitioning needs.
type RepartitionJS interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
	DeleteConsumer(ctx context.Context, stream, consumer string) error
	ResetConsumerToSequence(ctx context.Context, stream, consumer string, seq uint64) (*jetstream.ConsumerResetResponse, error)
	CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// WithPartitions returns the names of the same topology with another
// partition count.
func (n Names) WithPartitions(p int) Names {
	c := n.c
	c.Partitions = p
	return Names{c: c}
}

// input is a stream producers publish to, partitioned by a transform, and
// the stage that reads it.
type input struct {
	stream, kind string
	stage        Stage
	required     bool
}

// inputs are the partitioned input streams: the stages with an Intake.
func (n Names) inputs() []input {
	var out []input
	for _, s := range stageSpecs {
		if s.Intake != "" {
			out = append(out, input{s.Stream(n), s.Intake, s.Name, !s.Optional})
		}
	}
	return out
}

func (n Names) ingestSubject(kind string) string { return n.c.Prefix + "." + kind + ".*.*" }

// IntakeClosedSubject is what an input stream of kind ("events",
// "inbound") binds instead of its producer subject while intake is closed.
// Nobody publishes there.
func (n Names) IntakeClosedSubject(kind string) string { return n.c.Prefix + ".closed." + kind }

func (n Names) inputConfig(in input) jetstream.StreamConfig {
	spec, _ := SpecOf(in.stage)
	return spec.StreamConfig(n)
}

var partitionRe = regexp.MustCompile(`\{\{\s*partition\(\s*(\d+)\s*,`)

// TransformPartitions reads the partition count from a stream's subject
// transform ({{partition(N,2)}}); ok is false when it has none.
func TransformPartitions(cfg jetstream.StreamConfig) (n int, ok bool) {
	if cfg.SubjectTransform == nil {
		return 0, false
	}
	m := partitionRe.FindStringSubmatch(cfg.SubjectTransform.Destination)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// InputState is one partitioned input stream.
type InputState struct {
	Stream string `json:"stream"`
	Stage  Stage  `json:"stage"`
	// Partitions is the count its transform applies.
	Partitions int `json:"partitions"`
	// Open is true while the producer subject is bound (events are accepted).
	Open bool `json:"open"`
	// Closed is the MetaIntake note while intake is closed.
	Closed  string `json:"closed,omitempty"`
	Msgs    uint64 `json:"msgs"`
	LastSeq uint64 `json:"last_seq"`
	// Switch is the unfinished switch the stream records, if any.
	Switch *SwitchMark `json:"switch,omitempty"`
}

// SwitchMark records a switch in progress on an input stream.
type SwitchMark struct {
	From int `json:"from"`
	To   int `json:"to"`
	// Start is the first stream sequence the new lanes read.
	Start uint64 `json:"start"`
}

func (m SwitchMark) String() string {
	return fmt.Sprintf("from=%d to=%d start=%d", m.From, m.To, m.Start)
}

func parseMark(s string) *SwitchMark {
	var m SwitchMark
	if _, err := fmt.Sscanf(s, "from=%d to=%d start=%d", &m.From, &m.To, &m.Start); err != nil {
		return nil
	}
	return &m
}

// LaneState is one lane consumer as the server sees it.
type LaneState struct {
	Stage      Stage  `json:"stage"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	Partition  int    `json:"partition"`
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
	// AckFloor is the stream sequence up to which the lane settled every
	// message of its filter.
	AckFloor uint64 `json:"ack_floor"`
	// Filter is the lane consumer's filter subject.
	Filter string `json:"filter"`
	// Waiting is the number of pull requests waiting: > 0 means a service
	// is consuming this lane.
	Waiting     int        `json:"waiting"`
	PausedUntil *time.Time `json:"paused_until,omitempty"`
	// Stray is true for a lane that is not one of its stream's partition
	// count (left from another count).
	Stray bool `json:"stray,omitempty"`
}

// PartitionState is what repartitioning needs to know, read from the server.
type PartitionState struct {
	Inputs []InputState `json:"inputs"`
	Lanes  []LaneState  `json:"lanes"`
	// DispatchMsgs is the number of requests in the dispatch work queue.
	DispatchMsgs uint64 `json:"dispatch_msgs"`
	// Blockers says, one line each, why a switch is not safe yet (intake
	// open, events left in lanes); empty when it is.
	Blockers []string `json:"blockers"`
}

// Partitions is the events stream's partition count.
func (s PartitionState) Partitions() int {
	if len(s.Inputs) == 0 {
		return 0
	}
	return s.Inputs[0].Partitions
}

// Drained reports that intake is closed and every lane is empty.
func (s PartitionState) Drained() bool { return len(s.Blockers) == 0 }

// Open reports whether any input stream accepts events.
func (s PartitionState) Open() bool {
	for _, in := range s.Inputs {
		if in.Open {
			return true
		}
	}
	return false
}

// InUse lists the lane consumers that have clients pulling.
func (s PartitionState) InUse() []string {
	var out []string
	for _, l := range s.Lanes {
		if l.Waiting > 0 {
			out = append(out, l.Consumer)
		}
	}
	return out
}

// Pending sums the pending and in-hand messages of a stage's lanes.
func (s PartitionState) Pending(stage Stage) (pending uint64, busy int) {
	for _, l := range s.Lanes {
		if l.Stage == stage && (l.Pending > 0 || l.AckPending > 0) {
			pending += l.Pending + uint64(l.AckPending)
			busy++
		}
	}
	return pending, busy
}

// ReadPartitionState reads the input streams, every lane consumer and the
// dispatch queue. The partition counts come from the streams, not from
// n's config: only prefixes and stream names are taken from n.
func (n Names) ReadPartitionState(ctx context.Context, js RepartitionJS) (PartitionState, error) {
	var st PartitionState
	counts := map[Stage]int{}
	resumable := map[Stage]bool{}
	for _, in := range n.inputs() {
		s, err := js.Stream(ctx, in.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) && !in.required {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("stream %s: %w", in.stream, err)
		}
		info := s.CachedInfo()
		p, ok := TransformPartitions(info.Config)
		if !ok {
			return st, fmt.Errorf("stream %s has no partition transform: not a Sluice input stream", in.stream)
		}
		is := InputState{Stream: in.stream, Stage: in.stage, Partitions: p,
			Open: slices.Contains(info.Config.Subjects, n.ingestSubject(in.kind)),
			Msgs: info.State.Msgs, LastSeq: info.State.LastSeq, Closed: info.Config.Metadata[MetaIntake]}
		if m := info.Config.Metadata[MetaSwitch]; m != "" {
			is.Switch = parseMark(m)
		}
		st.Inputs = append(st.Inputs, is)
		counts[in.stage] = p
		for _, f := range stageSpecs {
			if f.Follows == in.stage {
				counts[f.Name] = p
			}
		}
		// A switch that began on a drained stream and saw nothing stored
		// since may be re-run: its new lanes may be half made.
		resumable[in.stage] = is.Switch != nil && is.LastSeq+1 == is.Switch.Start
		if is.Open {
			st.Blockers = append(st.Blockers, fmt.Sprintf("intake of %s is open (run drain)", in.stream))
		}
	}
	for _, spec := range stageSpecs {
		stage := spec.Name
		p, ok := counts[stage]
		if !ok {
			continue
		}
		stream := spec.Stream(n)
		s, err := js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("stream %s: %w", stream, err)
		}
		lanes, err := n.stageLanes(ctx, s, stage, p)
		if err != nil {
			return st, err
		}
		st.Lanes = append(st.Lanes, lanes...)
		if spec.WorkQueue {
			msgs := s.CachedInfo().State.Msgs
			st.DispatchMsgs += msgs
			if msgs > 0 {
				st.Blockers = append(st.Blockers, fmt.Sprintf("%s holds %d request(s)", stream, msgs))
			}
		}
		if resumable[stage] {
			continue
		}
		blk, err := n.laneBlockers(ctx, s, stage, p, lanes)
		if err != nil {
			return st, err
		}
		st.Blockers = append(st.Blockers, blk...)
	}
	return st, nil
}

// stageLanes lists the lane consumers of stage on s (every partition
// count), in name order.
func (n Names) stageLanes(ctx context.Context, s jetstream.Stream, stage Stage, partitions int) ([]LaneState, error) {
	var out []LaneState
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		p, ok := lanePartition(stage, ci.Name)
		if !ok {
			continue
		}
		ls := LaneState{Stage: stage, Stream: ci.Stream, Consumer: ci.Name, Partition: p,
			Pending: ci.NumPending, AckPending: ci.NumAckPending, Waiting: ci.NumWaiting,
			AckFloor: ci.AckFloor.Stream, Filter: ci.Config.FilterSubject,
			Stray: p >= partitions || ci.Config.FilterSubject != n.partitionFilter(stage, p)}
		if ci.Paused && ci.Config.PauseUntil != nil {
			u := ci.Config.PauseUntil.UTC()
			ls.PausedUntil = &u
		}
		out = append(out, ls)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("list consumers of %s: %w", s.CachedInfo().Config.Name, err)
	}
	slices.SortFunc(out, func(a, b LaneState) int { return strings.Compare(a.Consumer, b.Consumer) })
	return out, nil
}

func (n Names) partitionFilter(stage Stage, p int) string {
	_, f := n.StageFilter(stage, p)
	return f
}

// lanePartition parses "<stage>-<NNN>".
func lanePartition(stage Stage, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, string(stage)+"-")
	if !ok || len(rest) < 3 {
		return 0, false
	}
	p, err := strconv.Atoi(rest)
	return p, err == nil && p >= 0
}

// laneBlockers says which lanes of stage still hold work, and which
// partitions hold messages but have no lane consumer to read them.
//
// NumPending is a running count the server updates a moment after a
// message is stored, so "0 pending" can be stale right after a publish. A
// lane of an input stream (kept history, not a work queue) that looks idle
// is therefore checked exactly: the last message of its filter must be at
// or below its ack floor. The dispatcher's work queue is checked by its
// message count instead (acked requests leave it).
func (n Names) laneBlockers(ctx context.Context, s jetstream.Stream, stage Stage, partitions int, lanes []LaneState) ([]string, error) {
	workQueue := s.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy
	var busy []string
	have := map[int]bool{}
	for _, l := range lanes {
		if !l.Stray {
			have[l.Partition] = true
		}
		if l.Pending == 0 && l.AckPending == 0 && !workQueue {
			last, err := lastSeq(ctx, s, l.Filter)
			if err != nil {
				return nil, fmt.Errorf("lane %s: %w", l.Consumer, err)
			}
			if last > l.AckFloor {
				busy = append(busy, fmt.Sprintf("%s (events up to sequence %d, settled up to %d)", l.Consumer, last, l.AckFloor))
			}
			continue
		}
		if l.Pending > 0 || l.AckPending > 0 {
			b := fmt.Sprintf("%s (%d pending, %d in hand", l.Consumer, l.Pending, l.AckPending)
			if l.PausedUntil != nil {
				b += ", paused until " + l.PausedUntil.Format(time.RFC3339)
			}
			busy = append(busy, b+")")
		}
	}
	var out []string
	if len(busy) > 0 {
		const shown = 4
		line := fmt.Sprintf("%d %s lane(s) hold events: %s", len(busy), stage, strings.Join(busy[:min(shown, len(busy))], ", "))
		if len(busy) > shown {
			line += ", …"
		}
		out = append(out, line)
	}
	if s.CachedInfo().State.Msgs == 0 {
		return out, nil
	}
	for p := range partitions {
		if have[p] {
			continue
		}
		last, err := lastSeq(ctx, s, n.partitionFilter(stage, p))
		if err != nil {
			return nil, fmt.Errorf("partition %d of %s: %w", p, s.CachedInfo().Config.Name, err)
		}
		if last > 0 {
			out = append(out, fmt.Sprintf("partition %d of %s holds messages but has no lane consumer %s (start that service)",
				p, s.CachedInfo().Config.Name, n.ConsumerName(stage, p)))
		}
	}
	return out, nil
}

// lastSeq is the sequence of the last message stored under filter, 0 when
// there is none.
func lastSeq(ctx context.Context, s jetstream.Stream, filter string) (uint64, error) {
	m, err := s.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// CloseIntake unbinds the producer subject of every input stream (events,
// and inbound when it exists), so that nothing new is accepted: a producer
// gets no ack ("no responders") and retries with the same id. note (when,
// who, why) is kept in the stream's metadata. It returns the streams it
// closed; closing a closed stream does nothing.
func (n Names) CloseIntake(ctx context.Context, js RepartitionJS, note string) ([]string, error) {
	var closed []string
	for _, in := range n.inputs() {
		s, err := js.Stream(ctx, in.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) && !in.required {
			continue
		}
		if err != nil {
			return closed, fmt.Errorf("stream %s: %w", in.stream, err)
		}
		cfg := s.CachedInfo().Config
		if !slices.Contains(cfg.Subjects, n.ingestSubject(in.kind)) {
			continue
		}
		cfg.Subjects = replaceSubject(cfg.Subjects, n.ingestSubject(in.kind), n.IntakeClosedSubject(in.kind))
		cfg.Metadata = withMeta(cfg.Metadata, MetaIntake, note)
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return closed, fmt.Errorf("close intake of %s: %w", in.stream, err)
		}
		closed = append(closed, in.stream)
	}
	return closed, nil
}

// OpenIntake binds the producer subjects again. It refuses
// (ErrPartitionsChanged) when n's partition count differs from a stream's,
// so the config that opens is the one the services run with, and
// (ErrSwitchUnfinished) while a switch is unfinished. It returns the
// streams it opened.
func (n Names) OpenIntake(ctx context.Context, js RepartitionJS) ([]string, error) {
	type todo struct {
		in  input
		cfg jetstream.StreamConfig
	}
	var work []todo
	for _, in := range n.inputs() {
		s, err := js.Stream(ctx, in.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) && !in.required {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", in.stream, err)
		}
		cfg := s.CachedInfo().Config
		if m := cfg.Metadata[MetaSwitch]; m != "" {
			return nil, fmt.Errorf("%w: %s records %q; run `sluice partitions switch` to that count again",
				ErrSwitchUnfinished, in.stream, m)
		}
		if p, _ := TransformPartitions(cfg); p != n.c.Partitions {
			return nil, fmt.Errorf("%w: stream %s has %d partitions, config has topology.partitions %d; "+
				"set topology.partitions: %d (see \"Changing the partition count\" in docs/runbook.md)",
				ErrPartitionsChanged, in.stream, p, n.c.Partitions, p)
		}
		work = append(work, todo{in, cfg})
	}
	var opened []string
	for _, w := range work {
		ingest := n.ingestSubject(w.in.kind)
		if slices.Contains(w.cfg.Subjects, ingest) {
			continue
		}
		w.cfg.Subjects = replaceSubject(w.cfg.Subjects, n.IntakeClosedSubject(w.in.kind), ingest)
		w.cfg.Metadata = withMeta(w.cfg.Metadata, MetaIntake, "")
		if _, err := js.UpdateStream(ctx, w.cfg); err != nil {
			return opened, fmt.Errorf("open intake of %s: %w", w.in.stream, err)
		}
		opened = append(opened, w.in.stream)
	}
	return opened, nil
}

// replaceSubject returns subjects with from replaced by to (to added when
// from is absent).
func replaceSubject(subjects []string, from, to string) []string {
	out := make([]string, 0, len(subjects)+1)
	for _, s := range subjects {
		if s != from && s != to {
			out = append(out, s)
		}
	}
	return append(out, to)
}

// withMeta returns a copy of m with key set to v (removed when v is "").
func withMeta(m map[string]string, key, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, x := range m {
		out[k] = x
	}
	if v == "" {
		delete(out, key)
	} else {
		out[key] = v
	}
	return out
}
