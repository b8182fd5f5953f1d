package lane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/topology"
)

// Lane balancing (Config.Balance).
//
// Pinning gives each lane to one replica at a time, but by itself to the
// first replica that pulls: the others are hot standbys. With Balance on,
// the live replicas of a stage spread the lanes between them:
//
//   - Membership: each Group has a random member id and writes
//     <stage>.<id> (with the partitions it runs) into the members bucket
//     (topology.MembersConfig) every topology MemberHeartbeat, and watches
//     <stage>.* into memory. A member not heard of for MemberTimeout (three
//     heartbeats) or deleted (a clean Stop) is gone.
//   - Assignment: every member computes the same map from the same view:
//     partition by partition, the live members that run it are ranked by a
//     rendezvous hash of (stage, partition, member) and the partition goes
//     to the first one with room (N/k each, N%k of them one more). So k
//     members hold N/k lanes each (+1), and a member joining or leaving
//     moves few partitions besides its own.
//   - A lane not assigned here is on standby: it settles the message in
//     hand, hands back what is buffered, writes its fence and unpins the
//     lane if this process holds the pin (the same steps as a clean Stop),
//     and opens no pull while it stays so. The assigned member's lane pulls
//     as without balancing and is pinned by the server as soon as the pin
//     is let go (or expires, PinnedTTL after a dead holder's last pull).
//   - Safety net: views can disagree for a moment (watch lag, a member
//     whose heartbeats stopped but that still pulls). A standby lane reads
//     its consumer info every PinnedTTL; when messages wait (pending or
//     unacked) and no pull request does, twice in a row, it takes the lane
//     over and pulls for 4×PinnedTTL, then checks the assignment again.
//
// Balancing only decides who pulls. The pin still gives a lane to one
// replica at a time and the fence still catches a late duplicate, whatever
// the views are; the lane's order and fence logic are the same.

// takeoverChecks is how many consecutive orphaned readings make a standby
// lane take its lane over.
const takeoverChecks = 2

// memberSet is a Group's view of its stage's members and its heartbeat.
type memberSet struct {
	g       *Group
	kv      jetstream.KeyValue
	w       jetstream.KeyWatcher
	cancel  context.CancelFunc
	id, key string
	value   []byte
	every   time.Duration
	timeout time.Duration
	log     zerolog.Logger

	mu       sync.Mutex
	seen     map[string]memberSeen // by member id
	lastView string                // the live member ids at the last rebalance
	beatErr  bool

	stop chan struct{}
	wg   sync.WaitGroup
}

type memberSeen struct {
	parts []int // nil: all
	at    time.Time
}

func newMemberID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func openMemberSet(ctx context.Context, g *Group) (*memberSet, error) {
	names, stage := g.cfg.Names, g.cfg.Stage
	kv, err := g.js.CreateOrUpdateKeyValue(ctx, names.MembersConfig())
	if err != nil {
		return nil, fmt.Errorf("lane: members bucket: %w", err)
	}
	host, _ := os.Hostname()
	id := newMemberID()
	val, _ := json.Marshal(topology.Member{Partitions: g.cfg.Partitions, Host: host, Started: time.Now().UTC()})
	ms := &memberSet{g: g, kv: kv, id: id, key: topology.MemberKey(stage, id), value: val,
		every: names.MemberHeartbeat(), timeout: names.MemberTimeout(),
		log:  g.cfg.Logger.With().Str("stage", string(stage)).Str("member", id).Logger(),
		seen: map[string]memberSeen{}, stop: make(chan struct{})}
	if _, err := kv.Put(ctx, ms.key, val); err != nil {
		return nil, fmt.Errorf("lane: join members: %w", err)
	}
	ms.w, ms.cancel, err = watchKV(ctx, kv, string(stage)+".*", "members", func(e jetstream.KeyValueEntry) {
		// An initial value: the member was last heard of when it wrote it.
		at := e.Created()
		if now := time.Now(); at.After(now) {
			at = now
		}
		ms.observe(e, at)
	})
	if err != nil {
		return nil, err
	}
	ms.wg.Add(2)
	go ms.follow()
	go ms.beat()
	return ms, nil
}

func (ms *memberSet) observe(e jetstream.KeyValueEntry, at time.Time) {
	_, id, ok := strings.Cut(e.Key(), ".")
	if !ok || id == ms.id {
		return
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(ms.seen, id)
		return
	}
	var m topology.Member
	_ = json.Unmarshal(e.Value(), &m) // an unreadable value: a member running all partitions
	ms.seen[id] = memberSeen{parts: m.Partitions, at: at}
}

func (ms *memberSet) follow() {
	defer ms.wg.Done()
	for e := range ms.w.Updates() {
		if e == nil {
			continue
		}
		ms.observe(e, time.Now())
		ms.rebalance()
	}
}

// beat rewrites the member entry every heartbeat and rebalances (members
// time out and takeovers end between watch updates).
func (ms *memberSet) beat() {
	defer ms.wg.Done()
	t := time.NewTicker(ms.every)
	defer t.Stop()
	for {
		select {
		case <-ms.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), ms.every)
		_, err := ms.kv.Put(ctx, ms.key, ms.value)
		cancel()
		ms.mu.Lock()
		switch {
		case err != nil && !ms.beatErr:
			ms.log.Warn().Err(err).Msg("lane member heartbeat failed; peers will take this replica's lanes if it goes on")
		case err == nil && ms.beatErr:
			ms.log.Info().Msg("lane member heartbeat restored")
		}
		ms.beatErr = err != nil
		ms.mu.Unlock()
		ms.rebalance()
	}
}

// live is the live members (this one included), by id.
func (ms *memberSet) live(now time.Time) map[string][]int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	out := map[string][]int{ms.id: ms.g.cfg.Partitions}
	for id, s := range ms.seen {
		if now.Sub(s.at) <= ms.timeout {
			out[id] = s.parts
		}
	}
	return out
}

// rebalance computes the assignment from the current view and gives each
// lane its part.
func (ms *memberSet) rebalance() {
	select {
	case <-ms.stop:
		return
	default:
	}
	now := time.Now()
	live := ms.live(now)
	owner := assignLanes(ms.g.cfg.Stage, ms.g.cfg.Names.Partitions(), live)
	ids := make([]string, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	view := strings.Join(ids, ",")
	mine := 0
	for _, id := range owner {
		if id == ms.id {
			mine++
		}
	}
	ms.mu.Lock()
	changed := view != ms.lastView
	ms.lastView = view
	ms.mu.Unlock()
	if changed {
		ms.log.Info().Int("members", len(ids)).Int("lanes_here", mine).Msg("lane members changed; rebalancing")
	}
	ms.g.mu.Lock()
	lanes := make([]*lane, 0, len(ms.g.lanes))
	for _, l := range ms.g.lanes {
		lanes = append(lanes, l)
	}
	ms.g.mu.Unlock()
	for _, l := range lanes {
		l.assign(owner[l.p] == ms.id, now)
	}
}

func (ms *memberSet) close() {
	select {
	case <-ms.stop:
	default:
		close(ms.stop)
	}
	if ms.w != nil {
		_ = ms.w.Stop()
	}
	if ms.cancel != nil {
		ms.cancel()
	}
}

// leave stops the heartbeat and deletes the member entry, so that peers
// rebalance at once (bounded by ctx).
func (ms *memberSet) leave(ctx context.Context) {
	ms.close()
	ms.wg.Wait()
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := ms.kv.Delete(dctx, ms.key); err != nil {
		ms.log.Info().Err(err).Msg("could not remove the lane member entry; it ages out")
	}
}

// assignLanes maps each of the stage's n partitions to a member: partition
// by partition, the members running it ranked by rendezvous score, the
// first with room: each of k members holds n/k partitions, n%k of them one
// more (if none of a partition's members has room, the first takes it).
// Members is by id, each with the partitions it runs (nil: all).
func assignLanes(stage topology.Stage, n int, members map[string][]int) map[int]string {
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	owner := make(map[int]string, n)
	if len(ids) == 0 {
		return owner
	}
	// Each member holds base or base+1 partitions; extra of them base+1.
	base, extra := n/len(ids), n%len(ids)
	load := map[string]int{}
	for p := 0; p < n; p++ {
		var cands []string
		for _, id := range ids {
			if parts := members[id]; len(parts) == 0 || slices.Contains(parts, p) {
				cands = append(cands, id)
			}
		}
		if len(cands) == 0 {
			continue
		}
		slices.SortStableFunc(cands, func(a, b string) int {
			sa, sb := laneScore(stage, p, a), laneScore(stage, p, b)
			switch {
			case sa > sb:
				return -1
			case sa < sb:
				return 1
			}
			return strings.Compare(a, b)
		})
		pick := cands[0]
		for _, id := range cands {
			if load[id] < base || (load[id] == base && extra > 0) {
				pick = id
				break
			}
		}
		if load[pick] == base && extra > 0 {
			extra--
		}
		owner[p] = pick
		load[pick]++
	}
	return owner
}

// laneScore is the rendezvous score of member id for stage's partition p.
func laneScore(stage topology.Stage, p int, id string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(string(stage) + "/" + strconv.Itoa(p) + "/" + id))
	// splitmix64 finaliser: FNV alone mixes a short suffix poorly.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// wantPull reports whether the lane should pull now: it is assigned here
// or took the lane over. Caller holds l.mu.
func (l *lane) wantPull(now time.Time) bool {
	return l.preferred || now.Before(l.takeoverUntil)
}

// assign records whether the lane is assigned here; a lane that no longer
// should pull drains its iterator (run then hands the lane over), one that
// should is woken from standby.
func (l *lane) assign(preferred bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.preferred = preferred
	if preferred {
		l.takeoverUntil = time.Time{}
	}
	if l.wantPull(now) {
		l.poke()
		return
	}
	if l.active && l.it != nil && !l.draining[l.it] {
		l.handingOver = true
		l.draining[l.it] = true
		l.it.Drain()
	}
}

// poke wakes the lane's run goroutine from standby.
func (l *lane) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// waitTurn blocks while the lane is on standby; it reports false when the
// lane is stopping.
func (l *lane) waitTurn() bool {
	if l.g.members == nil {
		return true
	}
	l.mu.Lock()
	want := l.wantPull(time.Now())
	if !want {
		l.stats.Standby = true
	}
	l.mu.Unlock()
	if want {
		return true
	}
	defer func() {
		l.mu.Lock()
		l.stats.Standby = false
		l.mu.Unlock()
	}()
	t := time.NewTicker(l.g.cfg.Names.Config().PinnedTTL)
	defer t.Stop()
	strikes := 0
	for {
		select {
		case <-l.ctx.Done():
			return false
		case <-l.wake:
		case <-t.C:
			if l.orphaned() {
				strikes++
			} else {
				strikes = 0
			}
			if strikes >= takeoverChecks {
				l.mu.Lock()
				l.takeoverUntil = time.Now().Add(4 * l.g.cfg.Names.Config().PinnedTTL)
				l.stats.Takeovers++
				l.mu.Unlock()
				l.log.Info().Msg("lane has messages and no replica pulls it; taking it over")
				return true
			}
			continue
		}
		if l.isStopping() {
			return false
		}
		l.mu.Lock()
		want = l.wantPull(time.Now())
		l.mu.Unlock()
		if want {
			l.log.Info().Msg("lane assigned to this replica; pulling")
			return true
		}
	}
}

// orphaned reports whether the lane's consumer has messages waiting and no
// pull request: no replica works it.
func (l *lane) orphaned() bool {
	if l.cons == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
	defer cancel()
	info, err := l.cons.Info(ctx)
	if err != nil || info.Paused {
		return false
	}
	return (info.NumPending > 0 || info.NumAckPending > 0) && info.NumWaiting == 0
}

// handOver runs after the lane's iterator ended: if the lane should no
// longer pull here, its fence is written and its pin let go so that the
// assigned replica takes it at once.
func (l *lane) handOver() {
	if l.g.members == nil {
		return
	}
	l.mu.Lock()
	l.active = false
	want := l.wantPull(time.Now())
	was := l.handingOver
	l.handingOver = false
	l.mu.Unlock()
	if want || l.isStopping() {
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
	defer cancel()
	if err := l.g.fence.write(ctx, l.fenceKey, true); err != nil {
		l.log.Warn().Err(err).Msg("fence write before hand-over failed")
	}
	l.release(ctx)
	if was {
		l.log.Info().Str("pin", l.pinID()).Msg("lane handed over to the replica it is assigned to")
	}
}
