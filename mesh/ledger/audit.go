package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// recordsMargin: ledger records are read from this long before the
// audited range starts (the ledger and events streams may be stamped by
// different servers' clocks).
const recordsMargin = time.Minute

// AuditOptions choose what an audit covers.
type AuditOptions struct {
	// Since and Until bound the events audited by the time the events
	// stream stored them; zero is open. Since is moved to the ledger's
	// start when the ledger does not reach back that far.
	Since, Until time.Time
	// Key and Type narrow the audit to one key and/or one event type.
	Key, Type string
	// Recheck is how long to wait before looking again at events found
	// lost (their records may still be on their way, or a replay may have
	// moved them between two reads). Default 2s; negative: no second look.
	Recheck time.Duration
	// Progress, if set, is told how far the reads are.
	Progress Progress
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Result is a Report with what was audited.
type Result struct {
	Report
	RanAt time.Time `json:"ran_at"`
	// From and Until are the range audited (From after clamping).
	From  time.Time `json:"from,omitzero"`
	Until time.Time `json:"until,omitzero"`
	Key   string    `json:"key,omitempty"`
	Type  string    `json:"type,omitempty"`
	// Notes say what the caller should know about the range.
	Notes []string `json:"notes,omitempty"`
}

// Audit reconciles the accepted events of the range against the ledger,
// the parked stream, the dispatch stream and the enricher lanes' progress.
// The result's OK is false when an event was lost or a key reordered.
func Audit(ctx context.Context, js jetstream.JetStream, names topology.Names, o AuditOptions) (Result, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Recheck == 0 {
		o.Recheck = 2 * time.Second
	}
	res := Result{RanAt: o.Now().UTC(), From: o.Since, Until: o.Until, Key: o.Key, Type: o.Type}
	if !o.Until.IsZero() && !o.Since.IsZero() && o.Until.Before(o.Since) {
		return res, fmt.Errorf("%w: until is before since", ErrBadRange)
	}
	ls, err := js.Stream(ctx, names.LedgerStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return res, fmt.Errorf("%w: stream %s does not exist", ErrNoLedger, names.LedgerStream())
	}
	if err != nil {
		return res, fmt.Errorf("stream %s: %w", names.LedgerStream(), err)
	}
	res.From, res.Notes = clampSince(ls.CachedInfo(), o.Since)
	src := &Source{JS: js, Names: names, Progress: o.Progress}
	f := Filter{Key: o.Key, Type: o.Type}
	in := Inputs{}
	if in.Events, err = src.Events(ctx, f, res.From, o.Until); err != nil {
		return res, err
	}
	recSince := time.Time{}
	if !res.From.IsZero() {
		recSince = res.From.Add(-recordsMargin)
	}
	var last uint64
	if in.Records, last, err = src.Records(ctx, f, recSince, 0); err != nil {
		return res, err
	}
	if err := look(ctx, src, f, recSince, &in); err != nil {
		return res, err
	}
	in.Now = o.Now()
	rep := Reconcile(in)
	for round := 0; round < 2 && rep.Totals.Lost > 0 && o.Recheck > 0; round++ {
		select {
		case <-time.After(o.Recheck):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		// Later stages last: an event moving on between two reads is
		// found by the later one.
		if err := look(ctx, src, f, recSince, &in); err != nil {
			return res, err
		}
		more, end, err := src.Records(ctx, f, time.Time{}, last+1)
		if err != nil {
			return res, err
		}
		in.Records, last = append(in.Records, more...), max(last, end)
		in.Now = o.Now()
		rep = Reconcile(in)
	}
	res.Report = rep
	return res, nil
}

// look reads where the undelivered events may be now: the enricher
// lanes' floors, the dispatch stream, the parked stream, the discards.
func look(ctx context.Context, src *Source, f Filter, since time.Time, in *Inputs) error {
	var err error
	if in.Floors, err = src.Floors(ctx); err != nil {
		return err
	}
	in.InDispatch = nil
	if in.InDispatch, err = src.InDispatch(ctx, Undecided(*in)); err != nil {
		return err
	}
	if in.Parked, err = src.Parked(ctx, f); err != nil {
		return err
	}
	if in.Discards, err = src.Discards(ctx, f, since); err != nil {
		return err
	}
	// Last: a key whose round is still under way when every stream was
	// read keeps its unplaced events in flight (its messages may have
	// moved between the reads); once the round ends they stay put.
	in.InRound = nil
	in.InRound, err = src.Rounds(ctx, Undecided(*in))
	return err
}

// clampSince moves since to where the ledger begins: its creation, or its
// first record when older ones were removed (max_age, max_bytes). Events
// before that have no records and would all look lost.
func clampSince(si *jetstream.StreamInfo, since time.Time) (time.Time, []string) {
	start := si.Created
	if si.State.FirstSeq > 1 && si.State.FirstTime.After(start) {
		start = si.State.FirstTime
	}
	if since.IsZero() || since.Before(start) {
		note := fmt.Sprintf("audited from %s, when the ledger begins (it was created then, or older records expired)",
			start.UTC().Format(time.RFC3339))
		if since.IsZero() {
			return start, nil
		}
		return start, []string{note}
	}
	return since, nil
}

// Summary is what `sluice audit` publishes on <prefix>.ledger.audit and
// the status page shows.
type Summary struct {
	RanAt             time.Time `json:"ran_at"`
	From              time.Time `json:"from,omitzero"`
	Until             time.Time `json:"until,omitzero"`
	Key               string    `json:"key,omitempty"`
	Type              string    `json:"type,omitempty"`
	OK                bool      `json:"ok"`
	Totals            Totals    `json:"totals"`
	OldestUndelivered *EventRef `json:"oldest_undelivered,omitempty"`
	// Lost names the first lost events.
	Lost []string `json:"lost,omitempty"`
}

// Summarize cuts a Result down to its Summary.
func Summarize(r Result) Summary {
	s := Summary{RanAt: r.RanAt, From: r.From, Until: r.Until, Key: r.Key, Type: r.Type, OK: r.OK(),
		Totals: r.Totals, OldestUndelivered: r.OldestUndelivered}
	for _, k := range r.Keys {
		for _, l := range k.Lost {
			if len(s.Lost) < 20 {
				s.Lost = append(s.Lost, l.ID)
			}
		}
	}
	return s
}

// PublishSummary stores s on <prefix>.ledger.audit.
func PublishSummary(ctx context.Context, js jetstream.JetStream, names topology.Names, s Summary) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, names.LedgerAuditSubject(), b); err != nil {
		return fmt.Errorf("publish audit summary: %w", err)
	}
	return nil
}

// LastSummary reads the last published Summary; nil when none.
func LastSummary(ctx context.Context, js jetstream.JetStream, names topology.Names) (*Summary, error) {
	st, err := js.Stream(ctx, names.LedgerStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := st.GetLastMsgForSubject(ctx, names.LedgerAuditSubject())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s Summary
	if err := json.Unmarshal(m.Data, &s); err != nil {
		return nil, fmt.Errorf("audit summary seq %d: %w", m.Sequence, err)
	}
	return &s, nil
}
