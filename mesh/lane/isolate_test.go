package lane_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// isoFixture runs one isolated enricher group over 1 partition whose
// handler parks every message listed in reject and records the rest.
type isoFixture struct {
	t      *testing.T
	names  topology.Names
	js     jetstream.JetStream
	admin  *lane.Parked
	mu     sync.Mutex
	seen   []string
	reject map[string]bool
	// open: rejected messages are parked with lane.ParkOpen.
	open  bool
	group *lane.Group
}

func newIsoFixture(t *testing.T) *isoFixture {
	return newIsoFixtureWith(t, nil, false)
}

// newIsoFixtureWith runs the group on wrap(js) when wrap is set, with
// transient failures stepping aside when stepAside is.
func newIsoFixtureWith(t *testing.T, wrap func(*isoFixture, jetstream.JetStream) jetstream.JetStream, stepAside bool) *isoFixture {
	names, js := setup(t, 1)
	f := &isoFixture{t: t, names: names, js: js, reject: map[string]bool{}}
	var gjs jetstream.JetStream = js
	if wrap != nil {
		gjs = wrap(f, js)
	}
	g, err := lane.NewGroup(gjs, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		IsolateKeys: true, StepAside: lane.StepAside{Enabled: stepAside},
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			f.mu.Lock()
			body, rej, open := string(m.Data), f.reject[string(m.Data)], f.open
			if !rej {
				f.seen = append(f.seen, body)
			}
			f.mu.Unlock()
			if rej && open {
				return lane.ParkOpen("crm rejected", errors.New("422"), nil)
			}
			if rej {
				return lane.Park("crm rejected", errors.New("422"), nil)
			}
			return lane.Done()
		}})
	require.NoError(t, err)
	f.admin, err = lane.OpenParked(context.Background(), js, names)
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	f.group = g
	return f
}

func (f *isoFixture) publish(key string, from, to int) {
	for i := from; i < to; i++ {
		m := nats.NewMsg(f.names.EventSubject("t1", key))
		m.Data = []byte(fmt.Sprintf("%s-%d", key, i))
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s-%d", key, i))
		_, err := f.js.PublishMsg(context.Background(), m)
		require.NoError(f.t, err)
	}
}

func (f *isoFixture) seenOf(key string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.seen {
		if len(s) > len(key) && s[:len(key)+1] == key+"-" {
			out = append(out, s)
		}
	}
	return out
}

func (f *isoFixture) waitSeen(key string, want ...string) {
	f.t.Helper()
	require.Eventually(f.t, func() bool { return len(f.seenOf(key)) >= len(want) }, 10*time.Second, 10*time.Millisecond)
	require.Equal(f.t, want, f.seenOf(key))
}

func (f *isoFixture) parkedBodies(key string) []string {
	msgs, err := f.admin.Messages(context.Background(), topology.StageEnricher, key)
	require.NoError(f.t, err)
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Data))
	}
	return out
}

// waitParked waits until n events of key are parked: their copies in the
// parked stream and the key's record counting them. The lane records a
// park after it stores the copy and before it acks, so a test that acts
// on the key (a discard, a replay) when it sees the copies alone can race
// the lane's last record (TestDiscardWhileParkingBehind runs that race on
// purpose).
func (f *isoFixture) waitParked(key string, n int) {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		pk, err := f.admin.Get(context.Background(), topology.StageEnricher, key)
		return err == nil && pk.Count == n && len(f.parkedBodies(key)) == n
	}, 10*time.Second, 10*time.Millisecond)
}

// waitFree waits until key is no longer parked or held (msg and its last
// state otherwise).
func (f *isoFixture) waitFree(key, msg string) {
	f.t.Helper()
	var pk lane.ParkedKey
	require.Eventually(f.t, func() bool {
		var err error
		pk, err = f.admin.Get(context.Background(), topology.StageEnricher, key)
		return errors.Is(err, lane.ErrNotParked)
	}, 10*time.Second, 10*time.Millisecond, msg+": %+v", &pk)
}

func (f *isoFixture) setReject(body string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reject[body] = on
}

func TestIsolatedKeyParksBehindAndReplaysInOrder(t *testing.T) {
	f := newIsoFixture(t)
	f.setReject("k-0", true)
	f.publish("k", 0, 3)
	f.publish("o", 0, 3)
	f.waitSeen("o", "o-0", "o-1", "o-2")
	f.waitParked("k", 3)
	require.Equal(t, []string{"k-0", "k-1", "k-2"}, f.parkedBodies("k"))
	require.Empty(t, f.seenOf("k"), "the handler must not see events behind a parked one")

	msgs, err := f.admin.Messages(context.Background(), topology.StageEnricher, "k")
	require.NoError(t, err)
	require.Equal(t, "crm rejected", msgs[0].Header.Get(lane.HeaderParkReason))
	require.Equal(t, "behind parked event k-0", msgs[1].Header.Get(lane.HeaderParkReason))
	keys, err := f.admin.List(context.Background())
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Equal(t, topology.StageEnricher, keys[0].Stage)
	require.Equal(t, "t1", keys[0].Type)
	require.Equal(t, msgs[0].Header.Get(lane.HeaderOriginSeq), fmt.Sprint(keys[0].FirstSeq))
	require.Equal(t, "k", keys[0].Key)
	require.Equal(t, "k-0", keys[0].FirstID)
	require.Equal(t, 3, keys[0].Count)
	require.Equal(t, lane.StateParked, keys[0].State)

	// Fix the cause, replay: k's events run once each, in order; k is unblocked.
	f.setReject("k-0", false)
	res, err := f.admin.Replay(context.Background(), topology.StageEnricher, "k", 10*time.Second, 3)
	require.NoError(t, err)
	require.True(t, res.Unblocked)
	require.Equal(t, 3, res.Republished)
	f.waitSeen("k", "k-0", "k-1", "k-2")
	require.Empty(t, f.parkedBodies("k"))
	keys, err = f.admin.List(context.Background())
	require.NoError(t, err)
	require.Empty(t, keys)

	f.publish("k", 3, 4)
	f.waitSeen("k", "k-0", "k-1", "k-2", "k-3")
}

// lastReplayHook is the operator's JetStream with a hook that runs just
// before the last replayed message of a round is published.
type lastReplayHook struct {
	lane.AdminJetStream
	once   sync.Once
	before func()
}

func (h *lastReplayHook) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if m.Header.Get(lane.HeaderReplayLast) != "" {
		h.once.Do(h.before)
	}
	return h.AdminJetStream.PublishMsg(ctx, m, opts...)
}

func TestReplayKeepsNewEventsBehind(t *testing.T) {
	f := newIsoFixture(t)
	f.setReject("k-0", true)
	f.publish("k", 0, 3)
	f.waitParked("k", 3)
	f.setReject("k-0", false)
	// Two new events of k arrive while the replay runs: in the input stream
	// they stand between the replayed events (before the round's last one),
	// so the lane must park them behind and the command replay them in a
	// second round. (Publishing them from the handler instead raced with
	// the round: stored after its last message they are simply the next
	// events, and the replay correctly took one round.)
	admin, err := lane.OpenParked(context.Background(), &lastReplayHook{AdminJetStream: f.js, before: func() { f.publish("k", 3, 5) }}, f.names)
	require.NoError(t, err)
	res, err := admin.Replay(context.Background(), topology.StageEnricher, "k", 10*time.Second, 5)
	require.NoError(t, err)
	require.True(t, res.Unblocked)
	require.Equal(t, 2, res.Rounds)
	require.Equal(t, 5, res.Republished)
	f.waitSeen("k", "k-0", "k-1", "k-2", "k-3", "k-4")
	require.Empty(t, f.parkedBodies("k"))
}

func TestReplayReparksWhenStillRejected(t *testing.T) {
	f := newIsoFixture(t)
	f.setReject("k-1", true)
	f.publish("k", 0, 3)
	f.waitSeen("k", "k-0")
	f.waitParked("k", 2)
	_, err := f.admin.Replay(context.Background(), topology.StageEnricher, "k", 10*time.Second, 3)
	require.ErrorIs(t, err, lane.ErrReparked)
	// Replay returns once k-1 is parked again; k-2 is parked behind it
	// right after.
	f.waitParked("k", 2)
	require.Equal(t, []string{"k-1", "k-2"}, f.parkedBodies("k"))
	require.Equal(t, []string{"k-0"}, f.seenOf("k"))
	f.setReject("k-1", false)
	res, err := f.admin.Replay(context.Background(), topology.StageEnricher, "k", 10*time.Second, 3)
	require.NoError(t, err)
	require.True(t, res.Unblocked)
	f.waitSeen("k", "k-0", "k-1", "k-2")
}

func TestDiscardPurgesAndUnblocks(t *testing.T) {
	f := newIsoFixture(t)
	f.setReject("k-0", true)
	f.publish("k", 0, 2)
	f.waitParked("k", 2)
	_, err := f.admin.Discard(context.Background(), topology.StageEnricher, "k", "", "test")
	require.Error(t, err, "a discard needs a reason")
	n, err := f.admin.Discard(context.Background(), topology.StageEnricher, "k", "bad record, fixed by hand", "test")
	require.NoError(t, err, "the audit stream stores the discard")
	require.Equal(t, 2, n)
	audit, err := f.js.Stream(context.Background(), f.names.AuditStream())
	require.NoError(t, err)
	rec, err := audit.GetLastMsgForSubject(context.Background(), f.names.Config().Prefix+".audit.>")
	require.NoError(t, err)
	require.Contains(t, string(rec.Data), "bad record, fixed by hand")
	require.Empty(t, f.parkedBodies("k"))
	_, err = f.admin.Get(context.Background(), topology.StageEnricher, "k")
	require.ErrorIs(t, err, lane.ErrNotParked)
	f.publish("k", 2, 3)
	f.waitSeen("k", "k-2")
	_, err = f.admin.Discard(context.Background(), topology.StageEnricher, "k", "again", "test")
	require.ErrorIs(t, err, lane.ErrNotParked)
}
