package lane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/leaderkv"
	"sluice.dev/mesh/topology"
)

// Per-key poison isolation (Config.IsolateKeys).
//
// When a handler parks an event of key K, the runner records K in the
// parked-keys KV bucket (topology.ParkedKeysBucket) before acking; every
// later event of K at that stage is then parked behind it without calling
// the handler, in order, while the other keys of the partition flow.
//
// Replay (Parked.Replay) keeps per-key order with two states:
//
//   - parked: every message of K is parked behind the first one.
//   - replaying (with a replay id): the operator's command re-publishes K's
//     parked messages, oldest first, into the stage's input subject with the
//     header Sluice-Replay: <id> (the last one also Sluice-Replay-Last). The
//     runner hands those to the handler; any other message of K (a new event
//     that arrived during the replay) is still parked behind, and counted.
//     When the handler parks a replayed message again, K goes back to
//     parked and the rest of the replay is parked behind it.
//   - When the last replayed message is settled, the runner deletes K's
//     entry (K is unblocked) if nothing was parked during the replay;
//     otherwise K goes back to parked with ReasonArrivedDuringReplay and the
//     command runs another round for those newer events, so they reach the
//     stage after the replayed ones.

// Headers of replayed messages and parked-behind messages.
const (
	HeaderReplay       = "Sluice-Replay"
	HeaderReplayLast   = "Sluice-Replay-Last"
	HeaderParkedBehind = "Sluice-Parked-Behind"
	// HeaderOrder is the sequence the event had in the stage's input
	// stream when it was first parked; replays keep it, and a key's parked
	// messages are replayed in its order (a replayed message parked again
	// lands in the parked stream after events that arrived during its
	// replay, but its order is older).
	HeaderOrder = "Sluice-Order"
)

// States of a parked key.
const (
	StateParked    = "parked"
	StateReplaying = "replaying"
)

// ReasonArrivedDuringReplay is the reason of a key that went back to parked
// because new events of it were parked while it was being replayed.
const ReasonArrivedDuringReplay = "events arrived during replay"

// ParkedKey is the JSON state of one parked key in the parked-keys bucket.
type ParkedKey struct {
	Stage    topology.Stage `json:"stage"`
	Type     string         `json:"type"`
	Key      string         `json:"key"`
	KeyToken string         `json:"key_token"`
	// FirstSeq and FirstID name the event the others are parked behind
	// (sequence in the stage's input stream, envelope/message id).
	FirstSeq uint64    `json:"first_seq"`
	FirstID  string    `json:"first_id,omitempty"`
	Reason   string    `json:"reason"`
	ParkedAt time.Time `json:"parked_at"`
	// Count is how many messages of the key were parked since the entry was
	// made (or, while replaying, since the replay began).
	Count    int    `json:"count"`
	State    string `json:"state"`
	ReplayID string `json:"replay_id,omitempty"`
	// Held is true for a key that stepped aside for a retry (hold.go): the
	// runner replays it by itself at RetryAt. Failures counts its failed
	// tries; Upto bounds the running round (the last parked sequence it
	// replays).
	Held     bool      `json:"held,omitempty"`
	Failures int       `json:"failures,omitempty"`
	RetryAt  time.Time `json:"retry_at,omitzero"`
	Upto     uint64    `json:"upto,omitempty"`
	// Draining names the replay round of a held key that still has
	// messages on their way through the lane (a replayed message failed
	// before them); no new round begins until its last one was parked
	// behind, or it could overtake them.
	Draining string `json:"draining,omitempty"`
}

func decodeParkedKey(b []byte) (ParkedKey, error) {
	var pk ParkedKey
	err := json.Unmarshal(b, &pk)
	return pk, err
}

// KVKeyValue is the part of jetstream.JetStream that isolation needs.
type KVKeyValue interface {
	CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// parkedSet is a group's in-memory view of its stage's parked keys, kept
// current by a KV watch. Revisions make sure an old watch event never
// overrides a newer local write.
type parkedSet struct {
	kv     jetstream.KeyValue
	stage  topology.Stage
	w      jetstream.KeyWatcher
	cancel context.CancelFunc // ends the watch's subscription goroutine

	mu   sync.Mutex
	keys map[string]setEntry // by KV key
	// onPut, if set, sees every entry written (the holder schedules held
	// keys from it).
	onPut func(kvKey string, value []byte)
}

type setEntry struct {
	parked bool
	rev    uint64
}

func openParkedSet(ctx context.Context, js JetStream, names topology.Names, stage topology.Stage) (*parkedSet, error) {
	kvs, ok := js.(KVKeyValue)
	if !ok {
		return nil, errors.New("lane: IsolateKeys needs a JetStream with key-value support")
	}
	kv, err := kvs.CreateOrUpdateKeyValue(ctx, names.ParkedKeysConfig())
	if err != nil {
		return nil, fmt.Errorf("lane: parked-keys bucket: %w", err)
	}
	// Reads go to the stream leader: a follower's direct get can miss a
	// hold or park this lane just wrote and let the key's next event by.
	s := &parkedSet{kv: leaderkv.Wrap(kv, js), stage: stage, keys: map[string]setEntry{}}
	if s.w, s.cancel, err = watchKV(ctx, kv, string(stage)+".>", "parked-keys", s.observe); err != nil {
		return nil, err
	}
	go s.follow()
	return s, nil
}

func (s *parkedSet) follow() {
	for e := range s.w.Updates() {
		if e != nil {
			s.observe(e)
		}
	}
}

func (s *parkedSet) observe(e jetstream.KeyValueEntry) {
	s.set(e.Key(), e.Operation() == jetstream.KeyValuePut, e.Revision())
	s.mu.Lock()
	f := s.onPut
	s.mu.Unlock()
	if f != nil && e.Operation() == jetstream.KeyValuePut {
		f(e.Key(), e.Value())
	}
}

func (s *parkedSet) set(kvKey string, parked bool, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.keys[kvKey]; ok && rev != 0 && cur.rev > rev {
		return
	}
	if rev == 0 {
		rev = s.keys[kvKey].rev
	}
	s.keys[kvKey] = setEntry{parked: parked, rev: rev}
}

func (s *parkedSet) maybeParked(kvKey string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[kvKey].parked
}

func (s *parkedSet) stop() {
	_ = s.w.Stop()
	s.cancel()
}

// get reads the authoritative state of kvKey; nil when not parked.
func (s *parkedSet) get(ctx context.Context, kvKey string) (*ParkedKey, uint64, error) {
	e, err := s.kv.Get(ctx, kvKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		s.set(kvKey, false, 0)
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var pk ParkedKey
	if err := json.Unmarshal(e.Value(), &pk); err != nil {
		return nil, 0, fmt.Errorf("parked key %s: %w", kvKey, err)
	}
	return &pk, e.Revision(), nil
}

// update applies change to kvKey's state with compare-and-set, retrying
// on a concurrent change. change receives nil when the key is not parked;
// it returns the new state, or nil to delete the entry.
func (s *parkedSet) update(ctx context.Context, kvKey string, change func(*ParkedKey) *ParkedKey) error {
	var last error
	for range 10 {
		cur, rev, err := s.get(ctx, kvKey)
		if err != nil {
			return err
		}
		next := change(cur)
		switch {
		case next == nil && cur == nil:
			return nil
		case next == nil:
			if err := s.kv.Delete(ctx, kvKey, jetstream.LastRevision(rev)); err != nil {
				last = err
				continue
			}
			s.set(kvKey, false, 0)
			return nil
		}
		b, _ := json.Marshal(next)
		var nrev uint64
		if cur == nil {
			nrev, err = s.kv.Create(ctx, kvKey, b)
		} else {
			nrev, err = s.kv.Update(ctx, kvKey, b, rev)
		}
		if err != nil {
			last = err
			continue
		}
		s.set(kvKey, true, nrev)
		return nil
	}
	return fmt.Errorf("parked key %s: %w", kvKey, last)
}

// msgID is the id of m for parked-key records: its Nats-Msg-Id or
// stream:seq.
func (l *lane) msgID(m *Msg) string {
	if id := m.Header.Get(nats.MsgIdHdr); id != "" {
		return id
	}
	return l.stream + ":" + strconv.FormatUint(m.StreamSeq, 10)
}

// isolation is what the gate decided for a message.
type isolation struct {
	kvKey  string
	pk     *ParkedKey // state when the key was parked
	replay bool       // a message of the running replay: the handler runs
	behind bool       // parked behind without calling the handler
}

// gate looks up m's key; it costs a KV read only when the local set says
// the key is parked.
func (l *lane) gate(m *Msg) (isolation, error) {
	ps := l.g.parked
	iso := isolation{kvKey: topology.ParkedKeyName(l.g.cfg.Stage, m.KeyToken)}
	if !ps.maybeParked(iso.kvKey) {
		return iso, nil
	}
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	pk, _, err := ps.get(ctx, iso.kvKey)
	if err != nil || pk == nil {
		return iso, err
	}
	iso.pk = pk
	if pk.State == StateReplaying && pk.ReplayID != "" && m.Header.Get(HeaderReplay) == pk.ReplayID {
		iso.replay = true
	} else {
		iso.behind = true
	}
	return iso, nil
}

// behindOutcome parks m behind the key's first parked event.
func behindOutcome(pk *ParkedKey) Outcome {
	first := pk.FirstID
	if first == "" {
		first = "seq " + strconv.FormatUint(pk.FirstSeq, 10)
	}
	if pk.State == StateReplaying && pk.Count == 0 {
		first = "replay " + pk.ReplayID
	}
	return Park("behind parked event "+first, nil, nats.Header{HeaderParkedBehind: []string{first}})
}

// recordPark records that m was parked (before it is acked); copySeq is
// the sequence of m's copy in the parked stream.
func (l *lane) recordPark(m *Msg, o Outcome, iso isolation, copySeq uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	reheld, discarded := false, false
	var lookErr error
	err := l.g.parked.update(ctx, iso.kvKey, func(cur *ParkedKey) *ParkedKey {
		reheld, discarded, lookErr = false, false, nil
		if cur == nil && iso.behind {
			// The key was freed between the gate and here. An operator's
			// discard that read the key's parked events after m's copy was
			// stored purged the copy with them: m is discarded, and the key
			// stays free (recorded again, it would block the key's later
			// events behind a copy that is gone, until a second discard).
			gone, err := l.copyGone(ctx, copySeq)
			if err != nil {
				lookErr = err
				return nil
			}
			if gone {
				discarded = true
				return nil
			}
		}
		first := func(pk *ParkedKey, state string) *ParkedKey {
			key, err := topology.KeyFromToken(m.KeyToken)
			if err != nil {
				key = m.KeyToken
			}
			pk.Stage, pk.Type, pk.Key, pk.KeyToken = l.g.cfg.Stage, m.Type, key, m.KeyToken
			pk.FirstSeq, pk.FirstID, pk.Reason, pk.ParkedAt = m.StreamSeq, l.msgID(m), o.Reason, now
			pk.State = state
			return pk
		}
		switch {
		case cur == nil && iso.behind && l.g.holder != nil:
			// The key was freed between the gate and here (its held
			// key's round ended empty): nothing of the key is parked or
			// in flight before m, so m is the key's oldest event. It
			// waits as a held key, replayed at once, not as a key parked
			// for the operator.
			pk := first(&ParkedKey{}, StateHeld)
			pk.Reason = ReasonRetrying + ": its key was freed while it was parked behind"
			pk.Held, pk.Count, pk.RetryAt = true, 1, now
			reheld = true
			return pk
		case cur == nil:
			pk := first(&ParkedKey{}, StateParked)
			pk.Count = 1
			return pk
		case iso.replay && cur.State == StateReplaying && cur.ReplayID == iso.pk.ReplayID:
			// The handler parked a replayed message again: K is parked
			// behind it; the rest of the replay follows it.
			n := *cur
			pk := first(&n, StateParked)
			pk.ReplayID, pk.Held, pk.Upto = "", false, 0
			pk.Count++
			return pk
		case cur.State == StateReplaying && cur.Count == 0:
			// The first event parked during a replay: the next round starts here.
			n := *cur
			pk := first(&n, StateReplaying)
			pk.Reason = cur.Reason
			pk.Count = 1
			return pk
		default:
			n := *cur
			n.Count++
			if n.Draining != "" && m.Header.Get(HeaderReplay) == n.Draining && m.Header.Get(HeaderReplayLast) != "" {
				// The held key's last replayed message in flight: the
				// next round may begin.
				n.Draining = ""
			}
			return &n
		}
	})
	switch {
	case err != nil:
		return err
	case lookErr != nil:
		return fmt.Errorf("look for the parked copy: %w", lookErr)
	case discarded:
		l.event(l.log.Info(), m).Uint64("parked_seq", copySeq).
			Msg("the parked copy was discarded by an operator before its key was recorded; the key stays free")
	case reheld:
		l.g.holder.schedule(iso.kvKey, now)
	}
	return nil
}

// copyGone reports whether the parked copy at seq is no longer stored.
// A zero seq (not known) is reported as stored.
func (l *lane) copyGone(ctx context.Context, seq uint64) (bool, error) {
	if seq == 0 {
		return false, nil
	}
	s, err := l.g.js.Stream(ctx, l.g.cfg.Names.ParkedStream())
	if err != nil {
		return false, err
	}
	_, err = s.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return true, nil
	case err != nil:
		return false, err
	}
	return false, nil
}

// endRound is the bucket change that ends round replayID of a key (the
// lane's, when the round's last message is settled, or the holder's, when
// the lane could not): free when nothing was parked during the round; held
// again, to be replayed at once (again), when events of a held key were;
// parked for the operator when events of an operator's replay were. A key
// no longer in that round is left as it is.
func endRound(c *ParkedKey, replayID string) (next *ParkedKey, again bool) {
	if c == nil || c.State != StateReplaying || c.ReplayID != replayID {
		return c, false
	}
	if c.Count == 0 {
		return nil, false
	}
	n := *c
	if n.Held {
		n.State, n.ReplayID, n.Upto, n.RetryAt = StateHeld, "", 0, time.Now().UTC()
		return &n, true
	}
	n.State, n.ReplayID, n.Reason, n.Upto = StateParked, "", ReasonArrivedDuringReplay, 0
	return &n, false
}

// finishReplay runs after the last replayed message of a round was acked
// (a held key's: just before the ack, which waits for it): K is unblocked,
// or parked again when events arrived during the replay. It reports
// whether the bucket took the change.
func (l *lane) finishReplay(m *Msg, iso isolation) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if iso.pk.Upto != 0 {
		if iso.pk.Held && m.raw != nil {
			// Before the ack: the removal may take seconds (the server
			// restarting), longer than AckWait.
			l.beat(m.raw)
		}
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		err := l.dropRoundCopies(dctx, m, iso.pk.Upto)
		dcancel()
		l.beat(nil)
		switch {
		case err != nil && iso.pk.Held:
			l.event(l.log.Warn(), m).Err(err).Msg("could not remove the held round's parked copies; sending its last event again")
			return false
		case err != nil:
			// An operator's replay: its last event is acked already. The
			// key is freed as before; the copies stay in the parked stream.
			l.event(l.log.Warn(), m).Err(err).Msg("could not remove the replay's parked copies; they stay in the parked stream")
		}
	}
	reheld := false
	err := l.g.parked.update(ctx, iso.kvKey, func(cur *ParkedKey) *ParkedKey {
		var n *ParkedKey
		n, reheld = endRound(cur, iso.pk.ReplayID)
		return n
	})
	if reheld && err == nil && l.g.holder != nil {
		l.g.holder.schedule(iso.kvKey, time.Now())
	}
	if err != nil {
		if iso.pk.Held {
			l.event(l.log.Warn(), m).Err(err).Msg("could not finish the retry of a held key; sending its last event again")
		} else {
			l.event(l.log.Warn(), m).Err(err).Msg("could not finish the replay of a parked key; it stays blocked")
		}
		return false
	}
	if iso.pk.Held {
		l.event(l.log.Debug(), m).Str("replay", iso.pk.ReplayID).Msg("retry of a held key finished")
		return true
	}
	l.event(l.log.Info(), m).Str("replay", iso.pk.ReplayID).Msg("replay of a parked key finished")
	return true
}
