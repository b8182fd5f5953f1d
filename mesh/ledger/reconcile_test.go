package ledger

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/topology"
)

var t0 = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

// ev is an accepted event of key k at events-stream sequence seq
// (partition 0).
func ev(id, k string, seq uint64) Event {
	return Event{ID: id, Type: "t", KeyToken: k, Seq: seq, At: t0.Add(time.Duration(seq) * time.Second)}
}

func copyOf(e Event, seq uint64, replay string) Event {
	e.Seq, e.Replay, e.At = seq, replay, t0.Add(time.Duration(seq)*time.Second)
	return e
}

// rec is a ledger record of step for id at ledger sequence lseq.
func rec(step Step, id, k string, lseq uint64) Stored {
	r := Stored{Record: Record{Step: step, EventID: id, Type: "t", KeyToken: k, At: t0.Add(time.Duration(lseq) * time.Minute),
		Deliveries: 1, Attempts: 1}, LedgerSeq: lseq}
	switch step {
	case StepParked:
		r.Stage, r.Reason = topology.StageDispatcher, "crm rejected: 422"
	case StepEnriched:
		r.Stage, r.Out = topology.StageEnricher, "sluice.dispatch.0.t."+k
	default:
		r.Stage = topology.StageDispatcher
	}
	return r
}

// delivered is the delivered record of id at ledger sequence lseq, for
// the request at the same dispatch stream sequence.
func delivered(id, k string, lseq uint64) Stored { return deliveredAt(id, k, lseq, lseq) }

// deliveredAt is delivered with dispatch stream sequence dseq.
func deliveredAt(id, k string, lseq, dseq uint64) Stored {
	r := rec(StepDelivered, id, k, lseq)
	r.Seq = dseq
	return r
}

// inlineAt is deliveredAt for an inline delivery: seq is the event's
// sequence in the events stream.
func inlineAt(id, k string, lseq, seq uint64) Stored {
	r := deliveredAt(id, k, lseq, seq)
	r.Inline, r.Stage = true, topology.StageEnricher
	return r
}

func TestReconcile(t *testing.T) {
	floors := map[int]uint64{0: 100}
	tests := []struct {
		name string
		in   Inputs
		// want
		ok                 bool
		totals             Totals
		lost               []string
		why                string
		reordered          [][2]string // earlier, later
		duplicates         []string
		possibleDuplicates []string
		oldest             string
	}{
		{
			name: "every event delivered in order",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("b1", "b", 2), ev("a2", "a", 3)},
				Records: []Stored{delivered("a1", "a", 1), delivered("b1", "b", 2), delivered("a2", "a", 3)}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 2, Accepted: 3, Delivered: 3},
		},
		{
			name: "acked by the enricher with no record is lost",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2)},
				Records: []Stored{delivered("a1", "a", 1)}, Floors: floors},
			totals: Totals{Keys: 1, Accepted: 2, Delivered: 1, Lost: 1},
			lost:   []string{"a2"},
			why:    "acked by the enricher",
		},
		{
			name:   "enriched and gone from the dispatch stream is lost",
			in:     Inputs{Events: []Event{ev("a1", "a", 1)}, Records: []Stored{rec(StepEnriched, "a1", "a", 1)}, Floors: floors},
			totals: Totals{Keys: 1, Accepted: 1, Lost: 1},
			lost:   []string{"a1"},
			why:    "not in the dispatch stream",
		},
		{
			name: "beyond the ack floor, in the dispatch stream, or with no enricher lane is in flight",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 101), {ID: "p1", KeyToken: "p", Partition: 1, Seq: 3, At: t0}},
				Records:    []Stored{rec(StepEnriched, "a1", "a", 1)},
				InDispatch: map[string]bool{"a1": true}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 2, Accepted: 3, InFlight: 3},
			oldest: "p1",
		},
		{
			name: "in the parked stream is parked, and undelivered",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2)},
				Records: []Stored{rec(StepParked, "a1", "a", 1), rec(StepParked, "a2", "a", 2)},
				Parked: []ParkedMsg{{ID: "a1", Stage: topology.StageDispatcher, KeyToken: "a"},
					{ID: "a2", Stage: topology.StageDispatcher, KeyToken: "a"}}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 2, Parked: 2},
			oldest: "a1",
		},
		{
			name: "parked then discarded by an operator",
			in: Inputs{Events: []Event{ev("a1", "a", 1)}, Records: []Stored{rec(StepParked, "a1", "a", 1)},
				Discards: []Discard{{Stage: topology.StageDispatcher, KeyToken: "a", At: t0.Add(time.Hour)}}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 1, Discarded: 1},
		},
		{
			name: "a discard before the park does not cover it",
			in: Inputs{Events: []Event{ev("a1", "a", 1)}, Records: []Stored{rec(StepParked, "a1", "a", 90)},
				Discards: []Discard{{Stage: topology.StageDispatcher, KeyToken: "a", At: t0}}, Floors: floors},
			totals: Totals{Keys: 1, Accepted: 1, Lost: 1},
			lost:   []string{"a1"},
			why:    "no longer in the parked stream",
		},
		{
			name: "a discard covers an event whose parked record was never written",
			in: Inputs{Events: []Event{ev("a1", "a", 1)},
				Discards: []Discard{{Stage: topology.StageEnricher, KeyToken: "a", At: t0.Add(time.Hour)}}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 1, Discarded: 1},
		},
		{
			name: "unplaced while its key's round is under way is in flight; a discard still counts, and other keys stay lost",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("b1", "b", 3)},
				Records:  []Stored{rec(StepParked, "a1", "a", 1), rec(StepParked, "a2", "a", 90), rec(StepParked, "b1", "b", 3)},
				Discards: []Discard{{Stage: topology.StageDispatcher, KeyToken: "a", At: t0.Add(time.Hour)}},
				InRound:  map[string]bool{"a": true}, Floors: floors},
			totals: Totals{Keys: 2, Accepted: 3, InFlight: 1, Discarded: 1, Lost: 1},
			lost:   []string{"b1"},
			why:    "no longer in the parked stream",
			oldest: "a2",
		},
		{
			name: "a later event delivered first is reordered",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("a3", "a", 3)},
				Records: []Stored{delivered("a2", "a", 1), delivered("a1", "a", 2), delivered("a3", "a", 3)}, Floors: floors},
			totals:    Totals{Keys: 1, Accepted: 3, Delivered: 3, Reordered: 1, ReorderedKeys: 1},
			reordered: [][2]string{{"a1", "a2"}},
		},
		{
			name: "a record stored late (retried after a server restart) is not a reorder: the dispatch order says otherwise",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("a3", "a", 3)},
				Records: []Stored{deliveredAt("a2", "a", 1, 11), deliveredAt("a3", "a", 2, 12), deliveredAt("a1", "a", 3, 10)}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 3, Delivered: 3},
		},
		{
			name: "dispatch sequences that started again (stream recreated) are not a reorder: the ledger order says otherwise",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2)},
				Records: []Stored{deliveredAt("a1", "a", 1, 900), deliveredAt("a2", "a", 2, 1)}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 2, Delivered: 2},
		},
		{
			name: "a reorder behind a late record is still found",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("a3", "a", 3)},
				Records: []Stored{deliveredAt("a3", "a", 40, 10), deliveredAt("a2", "a", 50, 20), deliveredAt("a1", "a", 100, 1)}, Floors: floors},
			totals:    Totals{Keys: 1, Accepted: 3, Delivered: 3, Reordered: 1, ReorderedKeys: 1},
			reordered: [][2]string{{"a2", "a3"}},
		},
		{
			name: "across a switch to inline delivery the ledger order alone decides (events and dispatch sequences do not compare)",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("b1", "b", 3), ev("b2", "b", 4)},
				Records: []Stored{
					deliveredAt("a1", "a", 10, 900), inlineAt("a2", "a", 11, 2), // in order: sequences look reversed
					inlineAt("b2", "b", 12, 300), deliveredAt("b1", "b", 13, 5), // b2 went first: sequences look in order
				}, Floors: floors},
			totals:    Totals{Keys: 2, Accepted: 4, Delivered: 4, Reordered: 1, ReorderedKeys: 1},
			reordered: [][2]string{{"b1", "b2"}},
		},
		{
			name: "order is by first delivery; a repeat of an earlier event later is a duplicate, not a reorder",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2)},
				Records: []Stored{delivered("a1", "a", 1), delivered("a2", "a", 2), delivered("a1", "a", 3)}, Floors: floors},
			ok:         true,
			totals:     Totals{Keys: 1, Accepted: 2, Delivered: 2, Duplicates: 1, ExtraDeliveries: 1},
			duplicates: []string{"a1"},
		},
		{
			name: "parked, parked behind, replayed in order: delivered in order; the replay copies are not acceptances",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("b1", "b", 3),
				copyOf(ev("a1", "a", 1), 50, "r1"), copyOf(ev("a2", "a", 2), 51, "r1")},
				Records: []Stored{rec(StepParked, "a1", "a", 1), rec(StepParked, "a2", "a", 2), delivered("b1", "b", 3),
					delivered("a1", "a", 4), delivered("a2", "a", 5)}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 2, Accepted: 3, Delivered: 3},
		},
		{
			name: "a replayed event delivered before the earlier event it was parked behind is reordered",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2)},
				Records: []Stored{rec(StepParked, "a1", "a", 1), delivered("a2", "a", 2), delivered("a1", "a", 3)}, Floors: floors},
			totals:    Totals{Keys: 1, Accepted: 2, Delivered: 2, Reordered: 1, ReorderedKeys: 1},
			reordered: [][2]string{{"a1", "a2"}},
		},
		{
			name: "a replay copy still waiting for the enricher keeps its event in flight",
			in: Inputs{Events: []Event{ev("a1", "a", 1), copyOf(ev("a1", "a", 1), 150, "r1")},
				Records: []Stored{rec(StepParked, "a1", "a", 1)}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 1, InFlight: 1},
			oldest: "a1",
		},
		{
			name: "a copy of an event accepted before the range is ignored",
			in: Inputs{Events: []Event{copyOf(ev("old", "a", 1), 5, "r1"), ev("a2", "a", 6)},
				Records: []Stored{delivered("old", "a", 1), delivered("a2", "a", 2)}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 1, Delivered: 1},
		},
		{
			name: "a delivery after another process had the request, or after a 2xx park, is a possible duplicate",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("a3", "a", 3)},
				Records: func() []Stored {
					d := delivered("a1", "a", 1)
					d.Deliveries, d.Attempts = 3, 1
					retried := delivered("a2", "a", 2)
					retried.Deliveries, retried.Attempts = 3, 3 // this process retried it: no one else had it
					p := rec(StepParked, "a3", "a", 3)
					p.CRM = &CRMCall{Status: 201}
					return []Stored{d, retried, p, delivered("a3", "a", 4)}
				}(), Floors: floors},
			ok:                 true,
			totals:             Totals{Keys: 1, Accepted: 3, Delivered: 3, PossibleDuplicates: 2},
			possibleDuplicates: []string{"a1", "a3"},
		},
		{
			// Retries in hand (lane inplace.go) are attempts without a new
			// delivery: 3 attempts here of which 2 in hand ran 1 delivery,
			// so the other delivery was another process's.
			name: "a delivery retried in hand after another process had the request is a possible duplicate",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2)},
				Records: func() []Stored {
					d := delivered("a1", "a", 1)
					d.Deliveries, d.Attempts, d.InHand = 2, 3, 2
					own := delivered("a2", "a", 2)
					own.Deliveries, own.Attempts, own.InHand = 2, 3, 1 // 2 deliveries, both here
					return []Stored{d, own}
				}(), Floors: floors},
			ok:                 true,
			totals:             Totals{Keys: 1, Accepted: 2, Delivered: 2, PossibleDuplicates: 1},
			possibleDuplicates: []string{"a1"},
		},
		{
			// The process that had a1 died (maybe after the CRM took it);
			// here it failed, its key stepped aside, and a replayed copy
			// (a new message, delivered once) was delivered.
			name: "a delivery after a failed attempt that followed another process is a possible duplicate",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2)},
				Records: func() []Stored {
					a := rec(StepAttempt, "a1", "a", 1)
					a.Deliveries, a.Attempts = 2, 1
					own := rec(StepAttempt, "a2", "a", 2)
					own.Deliveries, own.Attempts = 2, 2 // naked and tried again here
					return []Stored{a, own, delivered("a1", "a", 3), delivered("a2", "a", 4)}
				}(), Floors: floors},
			ok:                 true,
			totals:             Totals{Keys: 1, Accepted: 2, Delivered: 2, PossibleDuplicates: 1},
			possibleDuplicates: []string{"a1"},
		},
		{
			name: "a later event delivered while an earlier one is parked overtook it (its key was not blocked)",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("a3", "a", 3), ev("b1", "b", 4)},
				Records: []Stored{rec(StepParked, "a1", "a", 1), delivered("a2", "a", 2), delivered("a3", "a", 3),
					rec(StepParked, "b1", "b", 4)},
				Parked: []ParkedMsg{{ID: "a1", Stage: topology.StageDispatcher, KeyToken: "a"},
					{ID: "b1", Stage: topology.StageDispatcher, KeyToken: "b"}}, Floors: floors},
			totals:    Totals{Keys: 2, Accepted: 4, Delivered: 2, Parked: 2, Reordered: 1, ReorderedKeys: 1},
			reordered: [][2]string{{"a1", "a2"}},
			oldest:    "a1",
		},
		{
			name: "a replay copy parked after the later event was delivered is not overtaken (the operator re-sent history)",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), copyOf(ev("a1", "a", 1), 50, "r1")},
				Records: []Stored{delivered("a2", "a", 2), rec(StepParked, "a1", "a", 3)},
				Parked:  []ParkedMsg{{ID: "a1", Stage: topology.StageDispatcher, KeyToken: "a"}}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 2, Delivered: 1, Parked: 1},
			oldest: "a1",
		},
		{
			name: "without a parked record of its stage the park time decides, with a minute for clocks",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("b1", "b", 3), ev("b2", "b", 4)},
				Records: []Stored{rec(StepParked, "a1", "a", 1), delivered("a2", "a", 20), delivered("b2", "b", 11)},
				Parked: []ParkedMsg{{ID: "a1", Stage: topology.StageEnricher, KeyToken: "a", At: t0.Add(10 * time.Minute)},
					{ID: "b1", Stage: topology.StageEnricher, KeyToken: "b", At: t0.Add(10 * time.Minute)}}, Floors: floors},
			totals:    Totals{Keys: 2, Accepted: 4, Delivered: 2, Parked: 2, Reordered: 1, ReorderedKeys: 1},
			reordered: [][2]string{{"a1", "a2"}},
			oldest:    "a1",
		},
		{
			name: "a message parked without its key (unroutable subject) blocked nothing",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2)},
				Records: []Stored{rec(StepParked, "a1", "a", 1), delivered("a2", "a", 2)},
				Parked:  []ParkedMsg{{ID: "a1", Stage: topology.StageEnricher, Type: "_", KeyToken: "_"}}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 2, Delivered: 1, Parked: 1},
			oldest: "a1",
		},
		{
			name: "an id accepted twice (no replay header) counts once",
			in: Inputs{Events: []Event{ev("a1", "a", 1), ev("a1", "a", 2)},
				Records: []Stored{delivered("a1", "a", 1)}, Floors: floors},
			ok:     true,
			totals: Totals{Keys: 1, Accepted: 1, Delivered: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Now = t0.Add(24 * time.Hour)
			rep := Reconcile(tc.in)
			require.Equal(t, tc.ok, rep.OK())
			require.Equal(t, tc.totals, rep.Totals)
			var lost, dups, possible []string
			var reordered [][2]string
			for _, k := range rep.Keys {
				for _, l := range k.Lost {
					lost = append(lost, l.ID)
					require.Equal(t, StateLost, l.State)
					require.Contains(t, l.Why, tc.why)
				}
				for _, r := range k.Reordered {
					reordered = append(reordered, [2]string{r.Earlier.ID, r.Later.ID})
				}
				for _, d := range k.Duplicates {
					dups = append(dups, d.ID)
				}
				possible = append(possible, k.PossibleDuplicates...)
			}
			require.Equal(t, tc.lost, lost)
			require.Equal(t, tc.reordered, reordered)
			require.Equal(t, tc.duplicates, dups)
			require.Equal(t, tc.possibleDuplicates, possible)
			if tc.oldest == "" {
				require.Nil(t, rep.OldestUndelivered)
			} else {
				require.NotNil(t, rep.OldestUndelivered)
				require.Equal(t, tc.oldest, rep.OldestUndelivered.ID)
				require.Positive(t, rep.OldestUndelivered.Age)
			}
		})
	}
}

func TestUndecidedAsksOnlyAboutEventsNothingElsePlaces(t *testing.T) {
	in := Inputs{
		Events: []Event{ev("a1", "a", 1), ev("a2", "a", 2), ev("a3", "a", 150), ev("b1", "b", 3), ev("c1", "c", 4)},
		Records: []Stored{delivered("a1", "a", 1), rec(StepEnriched, "a2", "a", 2), rec(StepEnriched, "b1", "b", 3),
			rec(StepEnriched, "c1", "c", 4)},
		Parked: []ParkedMsg{{ID: "c1", Stage: topology.StageDispatcher}},
		Floors: map[int]uint64{0: 100},
	}
	require.Equal(t, map[string][]string{"a": {"a2"}, "b": {"b1"}}, Undecided(in))
	in.InDispatch = map[string]bool{"a2": true, "b1": true}
	rep := Reconcile(in)
	require.True(t, rep.OK())
	require.Equal(t, Totals{Keys: 3, Accepted: 5, Delivered: 1, InFlight: 3, Parked: 1}, rep.Totals)
}

func TestReportListsAreBoundedTotalsAreNot(t *testing.T) {
	var in Inputs
	for i := range 250 {
		in.Events = append(in.Events, ev("a"+string(rune('0'+i%10))+"-"+time.Duration(i).String(), "a", uint64(i+1)))
	}
	in.Floors = map[int]uint64{0: 1000}
	rep := Reconcile(in)
	require.Equal(t, 250, rep.Totals.Lost)
	require.Len(t, rep.Keys, 1)
	require.Len(t, rep.Keys[0].Lost, maxListed)
}

func TestARecordStoredTwiceCountsOnce(t *testing.T) {
	d := delivered("a1", "a", 1)
	again := d
	again.LedgerSeq = 9
	rep := Reconcile(Inputs{Events: []Event{ev("a1", "a", 1)}, Records: []Stored{d, again}, Floors: map[int]uint64{0: 10}})
	require.Equal(t, Totals{Keys: 1, Accepted: 1, Delivered: 1}, rep.Totals)
	redelivered := delivered("a1", "a", 10)
	redelivered.Deliveries = 2
	rep = Reconcile(Inputs{Events: []Event{ev("a1", "a", 1)}, Records: []Stored{d, again, redelivered}, Floors: map[int]uint64{0: 10}})
	require.Equal(t, 1, rep.Totals.Duplicates, "a second delivery is its own record")
}

// A create whose answer was lost is listed as uncertain with how it
// ended: the lookup's note, or the delivery's when the create was sent
// again or a conflict adopted.
func TestReconcileListsUncertainCreates(t *testing.T) {
	attempt := func(id string, lseq uint64, c CRMCall) Stored {
		r := rec(StepAttempt, id, "k", lseq)
		r.CRM = &c
		return r
	}
	d2 := delivered("b", "k", 6)
	d2.CRM = &CRMCall{Status: 200, CRMID: "deals-2", Note: "the CRM's duplicate check answered 409 naming it; adopted"}
	d3 := delivered("c", "k", 9)
	d3.CRM = &CRMCall{Status: 201, CRMID: "deals-3"}
	in := Inputs{Now: t0.Add(time.Hour), Floors: map[int]uint64{0: 100},
		Events: []Event{ev("a", "k", 1), ev("b", "k", 2), ev("c", "k", 3), ev("d", "k", 4)},
		Records: []Stored{
			attempt("a", 1, CRMCall{Kind: "create", Error: "connection error: EOF", Uncertain: true}),
			attempt("a", 2, CRMCall{Kind: "find", Status: 200, Uncertain: true, CRMID: "deals-1", Note: "found at the CRM: adopted"}),
			delivered("a", "k", 3),
			attempt("b", 4, CRMCall{Kind: "create", Status: 409, Uncertain: true}),
			attempt("b", 5, CRMCall{Kind: "create", Status: 503}), // not uncertain: a plain failure
			d2,
			attempt("c", 7, CRMCall{Kind: "create", Uncertain: true, Note: "redelivered; no crm.find configured"}),
			d3,
			delivered("d", "k", 10),
		}}
	rep := Reconcile(in)
	require.True(t, rep.OK())
	require.Equal(t, 3, rep.Totals.Uncertain)
	require.Len(t, rep.Keys, 1)
	u := rep.Keys[0].Uncertain
	require.Len(t, u, 3)
	require.Equal(t, Uncertain{ID: "a", At: in.Records[0].At, Why: "connection error: EOF", Resolution: "found at the CRM: adopted", CRMID: "deals-1"}, u[0])
	require.Equal(t, "crm answered 409", u[1].Why)
	require.Equal(t, "deals-2", u[1].CRMID)
	require.Contains(t, u[1].Resolution, "409 naming it")
	require.Equal(t, "redelivered: an earlier attempt's outcome is unknown", u[2].Why)
	require.Equal(t, "deals-3", u[2].CRMID)
	require.Contains(t, rep.Totals.String(), "uncertain creates 3")
}
