package ledger

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// States of an accepted event, as an audit or a trace finds it.
const (
	// StateDelivered: the CRM answered 2xx (a delivered record exists).
	StateDelivered = "delivered"
	// StateParked: the event is in the parked stream now.
	StateParked = "parked"
	// StateInFlight: beyond its enricher lane's ack floor, its CRM
	// request is still in the dispatch stream, or its key's held round
	// (or replay) is still moving its messages.
	StateInFlight = "in flight"
	// StateDiscarded: parked, then dropped by an operator's discard.
	StateDiscarded = "discarded"
	// StateLost: none of the above. The pipeline acked it and no record
	// says where it went.
	StateLost = "lost"
)

// discardGrace is how much later than a discard's audit record a parked
// record may be and still be covered by it (a message parked while the
// discard ran; clocks of two processes).
const discardGrace = time.Minute

// maxListed bounds each per-key list of a report; totals stay exact.
const maxListed = 100

// Event is one message of the events stream, as an audit reads it.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	KeyToken  string    `json:"key_token"`
	Partition int       `json:"partition"`
	Seq       uint64    `json:"seq"`
	At        time.Time `json:"at"`
	// Replay is the Sluice-Replay header: an operator's copy of an event
	// accepted earlier, not an acceptance.
	Replay string `json:"replay,omitempty"`
}

// ParkedMsg is a message in the parked stream now.
type ParkedMsg struct {
	ID       string         `json:"id"`
	Stage    topology.Stage `json:"stage"`
	Type     string         `json:"type"`
	KeyToken string         `json:"key_token"`
	Seq      uint64         `json:"seq"`
	At       time.Time      `json:"at"`
	Reason   string         `json:"reason"`
	Error    string         `json:"error,omitempty"`
}

// Discard is an operator's discard of a key's parked events (from the
// audit stream's <prefix>.audit.parked records).
type Discard struct {
	Stage    topology.Stage `json:"stage"`
	KeyToken string         `json:"key_token"`
	At       time.Time      `json:"at"`
	By       string         `json:"by"`
	Reason   string         `json:"reason"`
}

// Inputs are what a reconciliation looks at.
type Inputs struct {
	// Events are the events stream's messages of the audited range, in
	// stream order (acceptances and replay copies).
	Events []Event
	// Records are the ledger records from the start of the range on, in
	// ledger order.
	Records []Stored
	// Parked are the parked stream's messages now.
	Parked []ParkedMsg
	// InDispatch holds the event ids whose CRM request is in the dispatch
	// stream now (only the ids that were looked up; see Undecided).
	InDispatch map[string]bool
	// Floors are the enricher lanes' ack floors (events stream sequence)
	// by partition. A partition without one (no enricher consumer) has
	// every event in flight.
	Floors map[int]uint64
	// Discards are the operators' discards.
	Discards []Discard
	// InRound holds the key tokens whose parked-keys entry said, after the
	// other reads, that a round moves their messages (held for a retry,
	// or being replayed): their unplaced events are in flight, not lost
	// (only the tokens that were looked up; see Undecided).
	InRound map[string]bool
	// Now dates the ages.
	Now time.Time
}

// EventRef names an event in a report.
type EventRef struct {
	ID         string        `json:"id"`
	Type       string        `json:"type"`
	Key        string        `json:"key"`
	Seq        uint64        `json:"seq"`
	AcceptedAt time.Time     `json:"accepted_at"`
	State      string        `json:"state"`
	Age        time.Duration `json:"age_ns,omitempty"`
	// Why explains a lost event: the last thing the records say.
	Why string `json:"why,omitempty"`
}

// Reorder is a pair delivered against accepted order: Earlier was
// accepted first but first delivered after Later, or (Earlier.State
// "parked") is parked now, its key blocked, while Later was delivered
// after the park.
type Reorder struct {
	Earlier EventRef `json:"earlier"`
	Later   EventRef `json:"later"`
}

// Duplicate is an event the CRM answered 2xx for more than once.
type Duplicate struct {
	ID         string `json:"id"`
	Deliveries int    `json:"deliveries"`
	// Replayed is true when an operator's replay re-sent the event (an
	// intended repeat; the CRM deduplicates by Idempotency-Key).
	Replayed bool `json:"replayed,omitempty"`
}

// Uncertain is a create whose outcome was unknown for a while: its answer
// was lost (timeout, connection cut, 5xx, 409) or its dispatch message was
// redelivered after a crash, so the CRM may have created the record
// without Sluice learning its id. Resolution says what the dispatcher did
// about it (the last uncertain attempt's note): found at the CRM and
// adopted, created again, or (without crm.find) sent again blind.
type Uncertain struct {
	ID         string    `json:"id"`
	At         time.Time `json:"at"`
	Why        string    `json:"why"`
	Resolution string    `json:"resolution,omitempty"`
	CRMID      string    `json:"crm_id,omitempty"`
}

// KeyReport is what an audit found for one key. Only keys with a finding
// (lost, reordered, duplicate or possible duplicate) are listed.
type KeyReport struct {
	Key      string `json:"key"`
	KeyToken string `json:"key_token"`
	// Counts by state.
	Accepted  int `json:"accepted"`
	Delivered int `json:"delivered"`
	Parked    int `json:"parked"`
	InFlight  int `json:"in_flight"`
	Discarded int `json:"discarded"`
	// Lost lists events neither delivered nor parked nor in flight nor
	// discarded, in accepted order.
	Lost []EventRef `json:"lost,omitempty"`
	// Reordered lists pairs delivered out of accepted order.
	Reordered []Reorder `json:"reordered,omitempty"`
	// Duplicates lists events with more than one delivered record.
	Duplicates []Duplicate `json:"duplicates,omitempty"`
	// PossibleDuplicates lists events delivered once by the records whose
	// request may have reached the CRM once more: a process had it, or the
	// CRM accepted it, before the attempt that was recorded.
	PossibleDuplicates []string `json:"possible_duplicates,omitempty"`
	// Uncertain lists the key's creates whose answer was lost.
	Uncertain []Uncertain `json:"uncertain,omitempty"`
	// OldestUndelivered is the key's oldest parked or in-flight event.
	OldestUndelivered *EventRef `json:"oldest_undelivered,omitempty"`
}

// Totals sum a report over every key.
type Totals struct {
	Keys      int `json:"keys"`
	Accepted  int `json:"accepted"`
	Delivered int `json:"delivered"`
	Parked    int `json:"parked"`
	InFlight  int `json:"in_flight"`
	Discarded int `json:"discarded"`
	Lost      int `json:"lost"`
	// Reordered counts pairs; ReorderedKeys the keys with one.
	Reordered     int `json:"reordered"`
	ReorderedKeys int `json:"reordered_keys"`
	// Duplicates counts events delivered more than once; ExtraDeliveries
	// the deliveries beyond the first.
	Duplicates         int `json:"duplicates"`
	ExtraDeliveries    int `json:"extra_deliveries"`
	PossibleDuplicates int `json:"possible_duplicates"`
	// Uncertain counts creates whose answer was lost (see Uncertain).
	Uncertain int `json:"uncertain"`
}

// Report is the result of a reconciliation.
type Report struct {
	Totals Totals      `json:"totals"`
	Keys   []KeyReport `json:"keys"`
	// OldestUndelivered is the oldest parked or in-flight event.
	OldestUndelivered *EventRef `json:"oldest_undelivered,omitempty"`
}

// OK reports that nothing was lost or reordered.
func (r Report) OK() bool { return r.Totals.Lost == 0 && r.Totals.ReorderedKeys == 0 }

// life is what the inputs say about one accepted event.
type life struct {
	ev        Event // the acceptance
	maxSeq    uint64
	replayed  bool
	delivered []*Stored
	enriched  *Stored
	parkedRec *Stored
	parkedNow *ParkedMsg
	uncertain []*Stored
	// elsewhere: a failed attempt of the event came after another process
	// had its message (it may have sent it before it died); a later
	// delivery of a replayed copy (a held key) is then a possible
	// duplicate.
	elsewhere bool
	state     string
	why       string
}

func (l *life) ref(now time.Time) EventRef {
	key, err := topology.KeyFromToken(l.ev.KeyToken)
	if err != nil {
		key = l.ev.KeyToken
	}
	r := EventRef{ID: l.ev.ID, Type: l.ev.Type, Key: key, Seq: l.ev.Seq, AcceptedAt: l.ev.At, State: l.state, Why: l.why}
	if l.state == StateParked || l.state == StateInFlight {
		r.Age = now.Sub(l.ev.At)
	}
	return r
}

// index builds every accepted event's life, in accepted order.
func index(in Inputs) ([]*life, map[string]*life) {
	byID := make(map[string]*life, len(in.Events))
	var order []*life
	for _, e := range in.Events {
		l := byID[e.ID]
		if l == nil {
			if e.Replay != "" {
				continue // a copy of an event accepted before the range
			}
			l = &life{ev: e, maxSeq: e.Seq}
			byID[e.ID] = l
			order = append(order, l)
			continue
		}
		l.maxSeq = max(l.maxSeq, e.Seq)
		l.replayed = l.replayed || e.Replay != ""
	}
	seen := make(map[string]bool, len(in.Records))
	for i := range in.Records {
		r := &in.Records[i]
		l := byID[r.EventID]
		if l == nil {
			continue
		}
		if id := r.ID(); seen[id] {
			continue // a retried publish stored twice
		} else {
			seen[id] = true
		}
		switch r.Step {
		case StepDelivered:
			l.delivered = append(l.delivered, r)
			l.replayed = l.replayed || r.Replay != ""
		case StepEnriched:
			l.enriched = r
		case StepParked:
			l.parkedRec = r
		case StepAttempt:
			if r.CRM != nil && r.CRM.Uncertain {
				l.uncertain = append(l.uncertain, r)
			}
			l.elsewhere = l.elsewhere || lane.DeliveredElsewhere(r.Deliveries, r.Attempts, r.InHand)
		}
	}
	for i := range in.Parked {
		p := &in.Parked[i]
		if l := byID[p.ID]; l != nil && l.parkedNow == nil && p.Stage != topology.StageInbound {
			l.parkedNow = p
		}
	}
	return order, byID
}

// classify sets l.state (and l.why for a lost event).
func classify(l *life, in Inputs, discards map[string][]Discard) {
	floor, known := in.Floors[l.ev.Partition]
	switch {
	case len(l.delivered) > 0:
		l.state = StateDelivered
	case l.parkedNow != nil:
		l.state = StateParked
	case !known || l.maxSeq > floor || in.InDispatch[l.ev.ID]:
		l.state = StateInFlight
	case discardedBy(l, discards[l.ev.KeyToken]) != nil:
		l.state = StateDiscarded
	case in.InRound[l.ev.KeyToken]:
		l.state = StateInFlight
	default:
		l.state = StateLost
		l.why = lostWhy(l, floor)
	}
}

func discardedBy(l *life, ds []Discard) *Discard {
	for i := range ds {
		d := &ds[i]
		if p := l.parkedRec; p != nil {
			if p.Stage == d.Stage && !p.At.After(d.At.Add(discardGrace)) {
				return d
			}
			continue
		}
		// No parked record (written after the park: a crash can lose
		// it): any discard of the key after the acceptance covers it.
		if !l.ev.At.After(d.At) {
			return d
		}
	}
	return nil
}

func lostWhy(l *life, floor uint64) string {
	switch {
	case l.parkedRec != nil:
		return "parked at " + string(l.parkedRec.Stage) + " (" + l.parkedRec.Reason + ") at " + stamp(l.parkedRec.At) +
			", no longer in the parked stream, never delivered and not discarded"
	case l.enriched != nil:
		return "enriched at " + stamp(l.enriched.At) + " to " + l.enriched.Out +
			", not in the dispatch stream, never delivered or parked"
	default:
		return "acked by the enricher (ack floor " + strconv.FormatUint(floor, 10) +
			" >= its seq), not in the dispatch stream, never delivered or parked"
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Undecided returns, by key token, the ids of events that only a look at
// the dispatch stream can place (in flight or lost). Look them up, fill
// Inputs.InDispatch, then Reconcile.
func Undecided(in Inputs) map[string][]string {
	order, _ := index(in)
	ds := discardsByKey(in.Discards)
	out := map[string][]string{}
	for _, l := range order {
		classify(l, in, ds)
		if l.state == StateLost || l.state == StateDiscarded {
			out[l.ev.KeyToken] = append(out[l.ev.KeyToken], l.ev.ID)
		}
	}
	return out
}

func discardsByKey(ds []Discard) map[string][]Discard {
	out := map[string][]Discard{}
	for _, d := range ds {
		out[d.KeyToken] = append(out[d.KeyToken], d)
	}
	return out
}

// Reconcile places every accepted event of in (delivered, parked, in
// flight, discarded or lost) and finds, per key, the deliveries out of
// accepted order and the events delivered more than once.
func Reconcile(in Inputs) Report {
	order, _ := index(in)
	ds := discardsByKey(in.Discards)
	keys := map[string]*keyAcc{}
	var keyOrder []string
	rep := Report{Keys: []KeyReport{}}
	for _, l := range order {
		classify(l, in, ds)
		k := keys[l.ev.KeyToken]
		if k == nil {
			key, err := topology.KeyFromToken(l.ev.KeyToken)
			if err != nil {
				key = l.ev.KeyToken
			}
			k = &keyAcc{KeyReport: KeyReport{Key: key, KeyToken: l.ev.KeyToken}}
			keys[l.ev.KeyToken] = k
			keyOrder = append(keyOrder, l.ev.KeyToken)
		}
		k.add(l, in.Now, &rep.Totals)
		if u := k.OldestUndelivered; u != nil && (rep.OldestUndelivered == nil || u.AcceptedAt.Before(rep.OldestUndelivered.AcceptedAt)) {
			rep.OldestUndelivered = u
		}
	}
	rep.Totals.Keys = len(keys)
	slices.Sort(keyOrder)
	for _, tok := range keyOrder {
		k := keys[tok]
		k.reorders(in.Now, &rep.Totals)
		k.overtaken(in.Now, &rep.Totals)
		if k.finding() {
			rep.Keys = append(rep.Keys, k.KeyReport)
		}
	}
	return rep
}

// keyAcc accumulates one key.
type keyAcc struct {
	KeyReport
	delivered []*life // in accepted order
	parked    []*life // parked now at an outbound stage, in accepted order
}

func (k *keyAcc) add(l *life, now time.Time, t *Totals) {
	k.Accepted++
	t.Accepted++
	switch l.state {
	case StateDelivered:
		k.Delivered++
		t.Delivered++
		k.delivered = append(k.delivered, l)
		k.duplicates(l, t)
	case StateParked:
		k.Parked++
		t.Parked++
		k.parked = append(k.parked, l)
	case StateInFlight:
		k.InFlight++
		t.InFlight++
	case StateDiscarded:
		k.Discarded++
		t.Discarded++
	case StateLost:
		t.Lost++
		if len(k.Lost) < maxListed {
			k.Lost = append(k.Lost, l.ref(now))
		}
	}
	if n := len(l.uncertain); n > 0 {
		t.Uncertain++
		if len(k.Uncertain) < maxListed {
			first, last := l.uncertain[0], l.uncertain[n-1]
			u := Uncertain{ID: l.ev.ID, At: first.At, Why: first.CRM.Error, Resolution: last.CRM.Note, CRMID: last.CRM.CRMID}
			switch {
			case u.Why == "" && first.CRM.Status != 0:
				u.Why = "crm answered " + strconv.Itoa(first.CRM.Status)
			case u.Why == "":
				u.Why = "redelivered: an earlier attempt's outcome is unknown"
			}
			// The delivery says how it ended when the last uncertain
			// attempt did not (a conflict adopted, a create sent again).
			if d := l.delivered; len(d) > 0 && d[len(d)-1].CRM != nil && (u.Resolution == "" || last.CRM.Kind != "find") {
				if c := d[len(d)-1].CRM; c.Note != "" || c.CRMID != "" {
					u.Resolution, u.CRMID = c.Note, c.CRMID
					if u.Resolution == "" {
						u.Resolution = "created (the create sent again was answered)"
					}
				}
			}
			k.Uncertain = append(k.Uncertain, u)
		}
	}
	if (l.state == StateParked || l.state == StateInFlight) &&
		(k.OldestUndelivered == nil || l.ev.At.Before(k.OldestUndelivered.AcceptedAt)) {
		r := l.ref(now)
		k.OldestUndelivered = &r
	}
}

func (k *keyAcc) duplicates(l *life, t *Totals) {
	if n := len(l.delivered); n > 1 {
		t.Duplicates++
		t.ExtraDeliveries += n - 1
		if len(k.Duplicates) < maxListed {
			k.Duplicates = append(k.Duplicates, Duplicate{ID: l.ev.ID, Deliveries: n, Replayed: l.replayed})
		}
		return
	}
	if possibleDuplicate(l) {
		t.PossibleDuplicates++
		if len(k.PossibleDuplicates) < maxListed {
			k.PossibleDuplicates = append(k.PossibleDuplicates, l.ev.ID)
		}
	}
}

// possibleDuplicate: the one recorded delivery, or a failed attempt
// before it (whose key then stepped aside and was replayed as a new
// message), came after another process had the request (it died or
// handed it back, maybe after the CRM answered), or the dispatcher parked
// it on a 2xx (a create whose answer held no id).
func possibleDuplicate(l *life) bool {
	d := l.delivered[0]
	if d.Attempts > 0 && lane.DeliveredElsewhere(d.Deliveries, d.Attempts, d.InHand) || l.elsewhere {
		return true
	}
	p := l.parkedRec
	return p != nil && p.Stage == topology.StageDispatcher && p.CRM != nil && p.CRM.Status/100 == 2
}

func (k *keyAcc) finding() bool {
	return len(k.Lost) > 0 || len(k.Reordered) > 0 || len(k.Duplicates) > 0 || len(k.PossibleDuplicates) > 0 ||
		len(k.Uncertain) > 0
}

// String is a one-line summary.
func (t Totals) String() string {
	var b strings.Builder
	b.WriteString("accepted " + strconv.Itoa(t.Accepted) + " (" + strconv.Itoa(t.Keys) + " keys): ")
	b.WriteString("delivered " + strconv.Itoa(t.Delivered) + ", parked " + strconv.Itoa(t.Parked) +
		", in flight " + strconv.Itoa(t.InFlight) + ", discarded " + strconv.Itoa(t.Discarded) +
		", LOST " + strconv.Itoa(t.Lost) + "; reordered " + strconv.Itoa(t.Reordered) + " pair(s) in " +
		strconv.Itoa(t.ReorderedKeys) + " key(s); duplicates " + strconv.Itoa(t.Duplicates) +
		" (+" + strconv.Itoa(t.ExtraDeliveries) + " deliveries), possible duplicates " + strconv.Itoa(t.PossibleDuplicates))
	if t.Uncertain > 0 {
		b.WriteString("; uncertain creates " + strconv.Itoa(t.Uncertain))
	}
	return b.String()
}
