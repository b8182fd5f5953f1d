package lane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/leaderkv"
	"sluice.dev/mesh/topology"
)

// ErrNotParked: the key is not parked at that stage; nothing to do.
var ErrNotParked = errors.New("lane: key is not parked")

// ErrReplaying: a replay of the key is running; wait for it (or run replay
// again to finish an interrupted one) before discarding.
var ErrReplaying = errors.New("lane: key is being replayed")

// ErrReparked: the stage parked a replayed event again (the cause is not
// fixed); the key stays parked with the new reason.
var ErrReparked = errors.New("lane: replayed event parked again")

// AdminJetStream is what the parked-keys operator commands need.
type AdminJetStream interface {
	KVKeyValue
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Parked is the operator's view of parked keys: list, show, replay, discard.
type Parked struct {
	js    AdminJetStream
	names topology.Names
	ps    *parkedSet
}

// OpenParked opens the parked-keys bucket (creating it if needed).
func OpenParked(ctx context.Context, js AdminJetStream, names topology.Names) (*Parked, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, names.ParkedKeysConfig())
	if err != nil {
		return nil, fmt.Errorf("lane: parked-keys bucket: %w", err)
	}
	return &Parked{js: js, names: names, ps: &parkedSet{kv: leaderkv.Wrap(kv, js), keys: map[string]setEntry{}}}, nil
}

// List returns every parked key, by stage then key.
func (p *Parked) List(ctx context.Context) ([]ParkedKey, error) {
	lister, err := p.ps.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []ParkedKey
	for k := range lister.Keys() {
		pk, _, err := p.ps.get(ctx, k)
		if err != nil {
			return nil, err
		}
		if pk != nil {
			out = append(out, *pk)
		}
	}
	_ = lister.Stop() // the channel is drained; Stop only unsubscribes
	sort.Slice(out, func(i, j int) bool {
		if out[i].Stage != out[j].Stage {
			return out[i].Stage < out[j].Stage
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// Get returns the state of key at stage, or ErrNotParked.
func (p *Parked) Get(ctx context.Context, stage topology.Stage, key string) (ParkedKey, error) {
	pk, _, err := p.ps.get(ctx, topology.ParkedKeyName(stage, topology.KeyToken(key)))
	if err != nil {
		return ParkedKey{}, err
	}
	if pk == nil {
		return ParkedKey{}, fmt.Errorf("%w: %s at %s", ErrNotParked, key, stage)
	}
	return *pk, nil
}

// Messages returns the parked messages of key at stage in parked order.
func (p *Parked) Messages(ctx context.Context, stage topology.Stage, key string) ([]*jetstream.RawStreamMsg, error) {
	s, err := p.js.Stream(ctx, p.names.ParkedStream())
	if err != nil {
		return nil, err
	}
	filter := p.names.ParkedKeyFilter(stage, topology.KeyToken(key))
	var out []*jetstream.RawStreamMsg
	err = eachBySubject(ctx, s, 1, filter, func(m *jetstream.RawStreamMsg) (bool, error) {
		out = append(out, m)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// inOrder sorts a key's parked messages into the order of its events
// (HeaderOrder; messages parked before it existed by their origin
// sequence, then as parked).
func inOrder(msgs []*jetstream.RawStreamMsg) {
	order := func(m *jetstream.RawStreamMsg) uint64 {
		v := m.Header.Get(HeaderOrder)
		if v == "" {
			v = m.Header.Get(HeaderOriginSeq)
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		return n
	}
	sort.SliceStable(msgs, func(i, j int) bool { return order(msgs[i]) < order(msgs[j]) })
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	// Rounds is how many rounds ran (a round replays what was parked when
	// it began; events parked during a round are replayed by the next).
	Rounds int
	// Republished counts the messages put back into the stage's input.
	Republished int
	// Unblocked is true when the key is no longer parked.
	Unblocked bool
}

// Replay re-publishes key's parked messages of stage, oldest first, into
// the stage's input subject and waits (up to wait per round) until the lane
// has run them and unblocked the key. It runs at most maxRounds rounds
// (events that arrive during a round are parked behind it and replayed by
// the next). With the lane not running it returns after the first round
// with Unblocked false; running Replay again finishes the job.
func (p *Parked) Replay(ctx context.Context, stage topology.Stage, key string, wait time.Duration, maxRounds int) (ReplayResult, error) {
	var res ReplayResult
	kvKey := topology.ParkedKeyName(stage, topology.KeyToken(key))
	for res.Rounds < max(maxRounds, 1) {
		res.Rounds++
		pk, err := p.begin(ctx, kvKey)
		if err != nil {
			return res, err
		}
		if pk == nil {
			res.Unblocked = true
			return res, nil
		}
		n, err := p.round(ctx, stage, key, kvKey, pk)
		res.Republished += n
		if err != nil {
			return res, err
		}
		if n == 0 {
			// Nothing parked (any more): unblock unless the lane changed it.
			err := p.ps.update(ctx, kvKey, func(cur *ParkedKey) *ParkedKey {
				if cur != nil && cur.State == StateReplaying && cur.ReplayID == pk.ReplayID && cur.Count == 0 {
					return nil
				}
				return cur
			})
			if err != nil {
				return res, err
			}
		}
		cur, err := p.await(ctx, kvKey, pk.ReplayID, wait)
		if err != nil {
			return res, err
		}
		switch {
		case cur == nil:
			res.Unblocked = true
			return res, nil
		case cur.State == StateReplaying:
			return res, nil // the lane has not finished yet
		case cur.Reason != ReasonArrivedDuringReplay:
			return res, fmt.Errorf("%w: %s", ErrReparked, cur.Reason)
		}
	}
	return res, nil
}

// begin moves the key to replaying (keeping the replay id of an
// interrupted replay) and returns its state; nil when not parked.
func (p *Parked) begin(ctx context.Context, kvKey string) (*ParkedKey, error) {
	var out *ParkedKey
	err := p.ps.update(ctx, kvKey, func(cur *ParkedKey) *ParkedKey {
		out = nil
		if cur == nil {
			return nil
		}
		n := *cur
		if n.State != StateReplaying {
			n.State = StateReplaying
			n.ReplayID = strconv.FormatInt(time.Now().UnixNano(), 36)
			n.Count, n.Upto = 0, 0
		}
		out = &n
		return &n
	})
	return out, err
}

// round re-publishes the parked messages, deleting each from the parked
// stream once it is stored again.
func (p *Parked) round(ctx context.Context, stage topology.Stage, key, kvKey string, pk *ParkedKey) (int, error) {
	msgs, err := p.Messages(ctx, stage, key)
	if err != nil {
		return 0, err
	}
	if err := p.bound(ctx, kvKey, pk.ReplayID, msgs); err != nil {
		return 0, err
	}
	inOrder(msgs)
	s, err := p.js.Stream(ctx, p.names.ParkedStream())
	if err != nil {
		return 0, err
	}
	for i, pm := range msgs {
		out, err := p.replayMsg(stage, pm, pk.ReplayID, i == len(msgs)-1)
		if err != nil {
			return i, err
		}
		if _, err := p.js.PublishMsg(ctx, out); err != nil {
			return i, fmt.Errorf("republish parked seq %d: %w", pm.Sequence, err)
		}
		if err := deleteMsg(ctx, s, pm.Sequence); err != nil {
			return i + 1, fmt.Errorf("delete parked seq %d: %w", pm.Sequence, err)
		}
	}
	return len(msgs), nil
}

// bound records the round's highest parked sequence in the key's entry
// (Upto) before anything is published: at the round's last message the
// lane removes the key's copies at or below it that the round did not
// delete (this command killed between a publish and its delete, or a
// delete failing) before it frees the key (stale.go). A held key's bound
// is its holder's.
func (p *Parked) bound(ctx context.Context, kvKey, replayID string, msgs []*jetstream.RawStreamMsg) error {
	if len(msgs) == 0 {
		return nil
	}
	upto := msgs[len(msgs)-1].Sequence // Messages reads in parked order
	return p.ps.update(ctx, kvKey, func(c *ParkedKey) *ParkedKey {
		if c == nil || c.Held || c.State != StateReplaying || c.ReplayID != replayID || c.Upto >= upto {
			return c
		}
		n := *c
		n.Upto = upto
		return &n
	})
}

// replayMsg rebuilds the stage input message of parked message pm.
func (p *Parked) replayMsg(stage topology.Stage, pm *jetstream.RawStreamMsg, replayID string, last bool) (*nats.Msg, error) {
	parts := strings.Split(pm.Subject, ".")
	if len(parts) != 5 {
		return nil, fmt.Errorf("parked seq %d: unexpected subject %q", pm.Sequence, pm.Subject)
	}
	typ, tok := parts[3], parts[4]
	var subject string
	if spec, ok := topology.SpecOf(stage); ok {
		// Back through the stage's input (the registry knows whether it
		// goes through a partition transform or needs today's partition).
		subject = spec.Replay(p.names, typ, tok)
	} else {
		subject = pm.Header.Get(HeaderOriginSubject)
		if subject == "" {
			return nil, fmt.Errorf("parked seq %d: no %s header", pm.Sequence, HeaderOriginSubject)
		}
	}
	out := nats.NewMsg(subject)
	out.Data = pm.Data
	for k, v := range pm.Header {
		if strings.HasPrefix(k, "Sluice-Park") || strings.HasPrefix(k, "Sluice-Origin-") ||
			k == HeaderDelivered || k == HeaderParkedBehind || strings.HasPrefix(k, "Sluice-Replay") {
			continue
		}
		out.Header[k] = v
	}
	id := strings.TrimPrefix(pm.Header.Get(nats.MsgIdHdr), "park:"+string(stage)+":")
	// A message replayed before carries the replay suffix of that round;
	// the new one replaces it (a key held many times would otherwise grow
	// its id by one suffix per round).
	id, _, _ = strings.Cut(id, ":replay:")
	if id == "" {
		id = p.names.ParkedStream() + ":" + strconv.FormatUint(pm.Sequence, 10)
	}
	// A new message id: the input stream's dedupe window still remembers
	// the original one. The envelope (the data) is unchanged.
	out.Header.Set(nats.MsgIdHdr, id+":replay:"+replayID+":"+strconv.FormatUint(pm.Sequence, 10))
	out.Header.Set(HeaderReplay, replayID)
	if last {
		out.Header.Set(HeaderReplayLast, "true")
	}
	return out, nil
}

// await polls the key until its replay is finished or wait has passed.
func (p *Parked) await(ctx context.Context, kvKey, replayID string, wait time.Duration) (*ParkedKey, error) {
	deadline := time.Now().Add(wait)
	for {
		cur, _, err := p.ps.get(ctx, kvKey)
		if err != nil {
			return nil, err
		}
		if cur == nil || cur.State != StateReplaying || cur.ReplayID != replayID || !time.Now().Before(deadline) {
			return cur, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DiscardRecord is the audit record of a discard, published on
// <prefix>.audit.parked.
type DiscardRecord struct {
	Action   string         `json:"action"`
	Stage    topology.Stage `json:"stage"`
	Key      string         `json:"key"`
	Reason   string         `json:"reason"`
	By       string         `json:"by"`
	At       time.Time      `json:"at"`
	Messages int            `json:"messages"`
	State    ParkedKey      `json:"state"`
}

// ErrNoAuditStream: no stream stores <prefix>.audit.>; the discard record
// was only published on core NATS. The discard itself was done.
var ErrNoAuditStream = errors.New("lane: no stream stores the audit subject")

// Discard records an audit entry, purges key's parked messages of stage
// and unblocks the key. reason and by are required.
func (p *Parked) Discard(ctx context.Context, stage topology.Stage, key, reason, by string) (int, error) {
	if strings.TrimSpace(reason) == "" {
		return 0, errors.New("lane: discard needs a reason")
	}
	kvKey := topology.ParkedKeyName(stage, topology.KeyToken(key))
	pk, _, err := p.ps.get(ctx, kvKey)
	if err != nil {
		return 0, err
	}
	if pk == nil {
		return 0, fmt.Errorf("%w: %s at %s", ErrNotParked, key, stage)
	}
	if pk.State == StateReplaying {
		return 0, ErrReplaying
	}
	msgs, err := p.Messages(ctx, stage, key)
	if err != nil {
		return 0, err
	}
	rec := DiscardRecord{Action: "discard", Stage: stage, Key: key, Reason: reason, By: by,
		At: time.Now().UTC(), Messages: len(msgs), State: *pk}
	b, _ := json.Marshal(rec)
	am := nats.NewMsg(p.names.AuditSubject("parked"))
	am.Data = b
	_, auditErr := p.js.PublishMsg(ctx, am)
	if auditErr != nil && !errors.Is(auditErr, jetstream.ErrNoStreamResponse) {
		return 0, fmt.Errorf("audit record: %w", auditErr)
	}
	s, err := p.js.Stream(ctx, p.names.ParkedStream())
	if err != nil {
		return 0, err
	}
	n := 0
	for range 10 {
		// Delete exactly the messages the record names, then unblock with
		// compare-and-set; a message parked meanwhile makes us go again.
		for _, m := range msgs {
			if err := deleteMsg(ctx, s, m.Sequence); err != nil {
				return n, err
			}
			n++
		}
		cur, rev, err := p.ps.get(ctx, kvKey)
		if err != nil || cur == nil {
			return n, err
		}
		if cur.Count == pk.Count {
			if err := p.ps.kv.Delete(ctx, kvKey, jetstream.LastRevision(rev)); err == nil {
				if auditErr != nil {
					return n, ErrNoAuditStream
				}
				return n, nil
			}
		}
		pk = cur
		if msgs, err = p.Messages(ctx, stage, key); err != nil {
			return n, err
		}
	}
	return n, errors.New("lane: discard: the key kept changing; try again")
}
