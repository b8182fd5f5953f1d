package loadgen_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/loadgen"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

func plan(t *testing.T, cfg loadgen.PlanConfig) *loadgen.Plan {
	t.Helper()
	p, err := loadgen.NewPlan(cfg)
	require.NoError(t, err)
	return p
}

// requirePerKeyOrder checks that ids (in the order the server stored
// them) hold every planned id exactly once and in plan order per key.
func requirePerKeyOrder(t *testing.T, p *loadgen.Plan, stored []string) {
	t.Helper()
	got := map[string][]string{}
	for _, id := range stored {
		key := id[:strings.LastIndexByte(id, '#')]
		got[key] = append(got[key], id)
	}
	require.Equal(t, p.Expected(), got)
}

func TestPublishJetStream(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(4))
	ctx := context.Background()
	require.NoError(t, names.Ensure(ctx, js))
	p := plan(t, loadgen.PlanConfig{Events: 600, Seed: 11})

	res, err := loadgen.PublishJetStream(ctx, js, names, p.Events, loadgen.PublishOptions{Concurrency: 8})
	require.NoError(t, err)
	require.Equal(t, 600, res.Published)
	require.Zero(t, res.Failed)
	require.Zero(t, res.Duplicates)

	st, err := js.Stream(ctx, names.EventsStream())
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 600, info.State.Msgs)

	var stored []string
	lastOnSubject := map[string]uint64{}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		env, err := envelope.Decode(m.Data)
		require.NoError(t, err)
		require.Equal(t, env.ID, m.Header.Get(nats.MsgIdHdr))
		part, typ, tok, err := names.SubjectParts(m.Subject)
		require.NoError(t, err)
		require.Equal(t, names.PartitionOf(env.Key), part)
		require.Equal(t, env.Type, typ)
		require.Equal(t, topology.KeyToken(env.Key), tok)
		require.Less(t, lastOnSubject[m.Subject], seq)
		lastOnSubject[m.Subject] = seq
		stored = append(stored, env.ID)
	}
	requirePerKeyOrder(t, p, stored)

	// A second run stores nothing new: same ids, deduplicated.
	res, err = loadgen.PublishJetStream(ctx, js, names, p.Events, loadgen.PublishOptions{})
	require.NoError(t, err)
	require.Equal(t, 600, res.Duplicates)
	info, err = st.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 600, info.State.Msgs)
}

// flaky is an AsyncPublisher that fails chosen attempts (or never answers
// them) and records the ids it stored, in order.
type flaky struct {
	mu       sync.Mutex
	attempts map[string]int
	stored   []string
	fail     func(id string, attempt int) bool
	silent   func(id string, attempt int) bool // never answered
	inFlight map[string]bool                   // per key
	overlap  bool
}

func newFlaky(fail func(id string, attempt int) bool) *flaky {
	return &flaky{attempts: map[string]int{}, fail: fail, inFlight: map[string]bool{},
		silent: func(string, int) bool { return false }}
}

type future struct {
	ok  chan *jetstream.PubAck
	err chan error
	msg *nats.Msg
}

func (f *future) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *future) Err() <-chan error            { return f.err }
func (f *future) Msg() *nats.Msg               { return f.msg }

func (f *flaky) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	id := m.Header.Get(nats.MsgIdHdr)
	key := id[:strings.LastIndexByte(id, '#')]
	fut := &future{ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1), msg: m}
	f.mu.Lock()
	if f.inFlight[key] {
		f.overlap = true
	}
	f.inFlight[key] = true
	f.attempts[id]++
	n := f.attempts[id]
	f.mu.Unlock()
	if f.silent(id, n) {
		f.mu.Lock()
		f.inFlight[key] = false
		f.mu.Unlock()
		return fut, nil
	}
	go func() {
		time.Sleep(100 * time.Microsecond)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.inFlight[key] = false
		if f.fail(id, n) {
			fut.err <- errors.New("nats: timeout")
			return
		}
		dup := false
		for _, s := range f.stored {
			dup = dup || s == id
		}
		if !dup {
			f.stored = append(f.stored, id)
		}
		fut.ok <- &jetstream.PubAck{Sequence: uint64(len(f.stored)), Duplicate: dup}
	}()
	return fut, nil
}

func seqOf(id string) int {
	n, _ := strconv.Atoi(id[strings.LastIndexByte(id, '#')+1:])
	return n
}

func TestPublishJetStreamRetriesWithTheSameIDInOrder(t *testing.T) {
	p := plan(t, loadgen.PlanConfig{Events: 400, Seed: 5})
	f := newFlaky(func(id string, attempt int) bool { return seqOf(id)%3 == 0 && attempt < 3 })
	names := topology.New(topology.Config{})
	res, err := loadgen.PublishJetStream(context.Background(), f, names, p.Events,
		loadgen.PublishOptions{Concurrency: 16, RetryWait: time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, 400, res.Published)
	failing := 0
	for _, ev := range p.Events {
		if seqOf(ev.ID)%3 == 0 {
			failing++
		}
	}
	require.Equal(t, 2*failing, res.Retries)
	requirePerKeyOrder(t, p, f.stored)
	require.False(t, f.overlap, "two events of one key were in flight at once")
}

func TestPublishJetStreamRepublishesWhenNoAckComes(t *testing.T) {
	p := plan(t, loadgen.PlanConfig{Events: 200, Seed: 7})
	f := newFlaky(func(string, int) bool { return false })
	f.silent = func(id string, attempt int) bool { return seqOf(id) == 2 && attempt == 1 }
	res, err := loadgen.PublishJetStream(context.Background(), f, topology.New(topology.Config{}), p.Events,
		loadgen.PublishOptions{AckTimeout: 30 * time.Millisecond, RetryWait: time.Millisecond, Concurrency: 8})
	require.NoError(t, err)
	require.Equal(t, 200, res.Published)
	silent := 0
	for k := range p.Expected() {
		if len(p.Expected()[k]) >= 2 {
			silent++
			require.Equal(t, 2, f.attempts[k+"#2"])
		}
	}
	require.Equal(t, silent, res.Retries)
	requirePerKeyOrder(t, p, f.stored)
}

func TestPublishJetStreamGivesUpAndHoldsTheKey(t *testing.T) {
	p := plan(t, loadgen.PlanConfig{Events: 300, Seed: 6})
	var bad *envelope.Envelope // an event with at least two later events of its key
	for _, ev := range p.Events {
		if len(p.Expected()[ev.Key]) >= seqOf(ev.ID)+2 {
			bad = ev
			break
		}
	}
	require.NotNil(t, bad)
	f := newFlaky(func(id string, _ int) bool { return id == bad.ID })
	res, err := loadgen.PublishJetStream(context.Background(), f, topology.New(topology.Config{}), p.Events,
		loadgen.PublishOptions{MaxAttempts: 3, RetryWait: time.Millisecond})
	require.ErrorIs(t, err, loadgen.ErrGaveUp)
	require.ErrorContains(t, err, bad.ID)
	require.Equal(t, 3, f.attempts[bad.ID])
	held := 0
	for _, id := range p.Expected()[bad.Key] {
		if seqOf(id) > seqOf(bad.ID) {
			require.Zero(t, f.attempts[id], "%s was sent after an earlier event of its key failed", id)
		}
		if seqOf(id) >= seqOf(bad.ID) {
			held++
		}
	}
	require.GreaterOrEqual(t, held, 3)
	require.Equal(t, held, res.Failed)
	require.Equal(t, 300-held, res.Published)
	require.Equal(t, 2, res.Retries)
}

func TestPublishHonoursRateAndContext(t *testing.T) {
	p := plan(t, loadgen.PlanConfig{Events: 100})
	f := newFlaky(func(string, int) bool { return false })
	t0 := time.Now()
	res, err := loadgen.PublishJetStream(context.Background(), f, topology.New(topology.Config{}), p.Events,
		loadgen.PublishOptions{Rate: 500})
	require.NoError(t, err)
	require.Equal(t, 100, res.Published)
	require.GreaterOrEqual(t, time.Since(t0), 180*time.Millisecond, "100 events at 500/s take ~200ms")

	// a publisher that never succeeds: ctx ends the run
	never := newFlaky(func(string, int) bool { return true })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 = time.Now()
	res, err = loadgen.PublishJetStream(ctx, never, topology.New(topology.Config{}), p.Events, loadgen.PublishOptions{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(t0), 2*time.Second)
	require.Zero(t, res.Published)
	require.Equal(t, 100, res.Failed)

	// rate limiting stops at the deadline too
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	res, err = loadgen.PublishJetStream(ctx2, f, topology.New(topology.Config{}), p.Events,
		loadgen.PublishOptions{Rate: 10})
	require.Error(t, err)
	require.Less(t, res.Published, 100)
	require.Equal(t, 100, res.Published+res.Failed)
}

func TestResultPerSecond(t *testing.T) {
	require.Equal(t, 50.0, loadgen.Result{Published: 100, Elapsed: 2 * time.Second}.PerSecond())
	require.Zero(t, loadgen.Result{}.PerSecond())
	require.Contains(t, fmt.Sprint(loadgen.ErrGaveUp), "gave up")
}
