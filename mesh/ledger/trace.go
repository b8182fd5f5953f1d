package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// Headers the dispatcher puts on a message it parks after a CRM answer
// (dispatcher.HeaderCRMStatus, dispatcher.HeaderCRMResponse).
const (
	headerCRMStatus   = "Sluice-Crm-Status"
	headerCRMResponse = "Sluice-Crm-Response"
)

// TraceOptions choose where trace looks.
type TraceOptions struct {
	// Key, when known, makes trace read that key's subjects only; without
	// it the events stream's message ids, then the ledger, are searched.
	Key string
	// Since bounds that search (zero: everything kept).
	Since time.Time
	// SensitiveFields are redacted from the payload, the CRM request body
	// and the CRM's answer (with the secret-like fields).
	SensitiveFields []string
	// Progress, if set, is told how far the search is.
	Progress Progress
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Trace is the life of one event.
type Trace struct {
	EventID   string `json:"event_id"`
	Type      string `json:"type"`
	Key       string `json:"key"`
	Partition int    `json:"partition"`
	// State is delivered, parked, in flight, discarded or lost (see the
	// State* constants); Why explains a lost event.
	State string `json:"state"`
	Why   string `json:"why,omitempty"`
	// Steps in time order.
	Steps []TraceStep `json:"steps"`
	// Payload is the envelope as accepted, sensitive fields redacted.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Request is the CRM request the mapping produced, when still stored
	// (dispatch or parked stream, or the ledger with ledger.bodies).
	Request *TraceRequest `json:"request,omitempty"`
	// Response is the CRM's last recorded answer.
	Response *TraceResponse `json:"response,omitempty"`
}

// TraceStep is one step of an event's life.
type TraceStep struct {
	At     time.Time      `json:"at"`
	Step   string         `json:"step"`
	Stage  topology.Stage `json:"stage,omitempty"`
	Stream string         `json:"stream,omitempty"`
	Seq    uint64         `json:"seq,omitempty"`
	Detail string         `json:"detail,omitempty"`
}

// TraceRequest summarises the CRM request.
type TraceRequest struct {
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	// UpdateMethod and UpdatePath are an upsert's update, sent instead
	// once the CRM id is known ("{crm_id}" unreplaced).
	UpdateMethod string          `json:"update_method,omitempty"`
	UpdatePath   string          `json:"update_path,omitempty"`
	Mode         string          `json:"mode,omitempty"`
	Object       string          `json:"object,omitempty"`
	Body         json.RawMessage `json:"body,omitempty"`
	From         string          `json:"from"`
}

// TraceResponse summarises the CRM's answer.
type TraceResponse struct {
	Status int             `json:"status,omitempty"`
	Took   time.Duration   `json:"took_ns,omitempty"`
	CRMID  string          `json:"crm_id,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
}

// TraceEvent gathers the life of event id from the events, ledger,
// parked, dispatch and audit streams.
func TraceEvent(ctx context.Context, js jetstream.JetStream, names topology.Names, id string, o TraceOptions) (Trace, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	tr := Trace{EventID: id, Steps: []TraceStep{}}
	red := NewRedactor(o.SensitiveFields)
	src := &Source{JS: js, Names: names, Progress: o.Progress}
	tok := ""
	if o.Key != "" {
		tok = topology.KeyToken(o.Key)
	} else {
		var err error
		if tok, err = findKey(ctx, src, id, o.Since); err != nil {
			return tr, err
		}
	}
	key, err := topology.KeyFromToken(tok)
	if err != nil {
		key = tok
	}
	tr.Key, tr.Partition = key, names.PartitionOf(key)
	f := Filter{Key: key}
	in := Inputs{Now: o.Now()}
	evs, err := src.Events(ctx, f, o.Since, time.Time{})
	if err != nil {
		return tr, err
	}
	for _, e := range evs {
		if e.ID == id {
			in.Events = append(in.Events, e)
		}
	}
	recs, _, err := src.Records(ctx, f, time.Time{}, 0)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return tr, err
	}
	for _, r := range recs {
		if r.EventID == id {
			in.Records = append(in.Records, r)
		}
	}
	if len(in.Events) == 0 && len(in.Records) == 0 {
		return tr, fmt.Errorf("%w: %s (key %q)", ErrEventNotFound, id, key)
	}
	if err := look(ctx, src, f, time.Time{}, &in); err != nil {
		return tr, err
	}
	parked := slices.DeleteFunc(slices.Clone(in.Parked), func(p ParkedMsg) bool { return p.ID != id })
	tr.steps(names, in, parked)
	if err := tr.contents(ctx, js, names, in, red); err != nil {
		return tr, err
	}
	tr.actions(ctx, src, key)
	slices.SortStableFunc(tr.Steps, func(a, b TraceStep) int { return a.At.Compare(b.At) })
	order, _ := index(in)
	if len(order) == 1 {
		l := order[0]
		classify(l, in, discardsByKey(in.Discards))
		tr.State, tr.Why = l.state, l.why
		if p := l.parkedNow; l.state == StateParked && p != nil {
			tr.Why = "at " + string(p.Stage) + ": " + p.Reason + " (parked stream seq " + strconv.FormatUint(p.Seq, 10) +
				"; `sluice parked show " + key + "`)"
		}
	} else {
		tr.State = "unknown"
		tr.Why = "accepted before the range searched (pass --since further back) or before the ledger began"
	}
	// Reasons and errors may quote a CRM's answer or come from an old
	// record written before values were kept out of them.
	tr.Why = red.Text(tr.Why)
	for i := range tr.Steps {
		tr.Steps[i].Detail = red.Text(tr.Steps[i].Detail)
	}
	return tr, nil
}

// findKey searches the events stream (by its messages' Nats-Msg-Id,
// reading headers only), then the ledger records, for event id and
// returns its key token.
func findKey(ctx context.Context, src *Source, id string, since time.Time) (string, error) {
	tok := ""
	n := src.Names
	_, err := src.read(ctx, readOpts{what: "events search", stream: n.EventsStream(), filters: []string{n.EventsFilter("", "")},
		since: since, headersOnly: true}, func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
		if baseMsgID(m.Headers().Get(nats.MsgIdHdr)) != id {
			return true, nil
		}
		_, _, tok, _ = n.SubjectParts(m.Subject())
		return tok == "", nil
	})
	if err != nil {
		return "", err
	}
	if tok == "" {
		_, err = src.read(ctx, readOpts{what: "ledger search", stream: n.LedgerStream(), filters: []string{n.LedgerFilter("", "", "")},
			since: since}, func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
			if r, ok := src.record(m.Subject(), m.Data()); ok && r.EventID == id {
				tok = r.KeyToken
				return false, nil
			}
			return true, nil
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return "", err
		}
	}
	if tok == "" || tok == "_" {
		return "", fmt.Errorf("%w: %s (searched the events stream's message ids and the ledger; pass --key to search one key's events by envelope id)",
			ErrEventNotFound, id)
	}
	return tok, nil
}

// steps lists what the streams and records say happened.
func (tr *Trace) steps(names topology.Names, in Inputs, parked []ParkedMsg) {
	add := func(s TraceStep) { tr.Steps = append(tr.Steps, s) }
	for _, e := range in.Events {
		tr.Type = e.Type
		if e.Replay == "" {
			add(TraceStep{At: e.At, Step: "accepted", Stream: names.EventsStream(), Seq: e.Seq,
				Detail: "stored by the events stream (the producer's ack)"})
			continue
		}
		add(TraceStep{At: e.At, Step: "replayed", Stream: names.EventsStream(), Seq: e.Seq,
			Detail: "re-published by an operator's replay " + e.Replay})
	}
	enriched := map[uint64]bool{} // dispatch sequences with an enriched step
	for _, r := range in.Records {
		if r.Step == StepEnriched {
			enriched[0] = true // the enricher's own records say it
		}
	}
	for _, r := range in.Records {
		if tr.Type == "" {
			tr.Type = r.Type
		}
		if !r.EnrichedAt.IsZero() && !enriched[0] && !enriched[r.Seq] {
			enriched[r.Seq] = true
			s := TraceStep{At: r.EnrichedAt, Step: "enriched", Stage: topology.StageEnricher, Stream: names.DispatchStream(),
				Seq: r.Seq, Detail: "CRM request stored in the dispatch stream"}
			if r.Replay != "" {
				s.Step, s.Stage, s.Detail = "replayed", "", "CRM request stored again in the dispatch stream by replay "+r.Replay
			}
			add(s)
		}
		s := TraceStep{At: r.At, Step: string(r.Step), Stage: r.Stage, Seq: r.Seq}
		if stream, _ := names.StageFilter(r.Stage, 0); stream != "" {
			s.Stream = stream
		}
		if r.Inline { // the dispatcher ran in the enricher's lane, on the event
			s.Stream = names.EventsStream()
		}
		switch r.Step {
		case StepEnriched:
			s.Detail = "CRM request forwarded to " + r.Out
		case StepDelivered:
			s.Detail = deliveredDetail(r.Record)
			if c := r.CRM; c != nil {
				tr.Response = &TraceResponse{Status: c.Status, Took: c.Took, CRMID: c.CRMID}
			}
		case StepParked:
			s.Detail = r.Reason
			if r.Error != "" && r.Error != r.Reason {
				s.Detail += ": " + r.Error
			}
		case StepAttempt:
			s.Detail = attemptDetail(r.Record)
			if c := r.CRM; c != nil && (c.Status != 0 || c.Response != "") {
				tr.Response = &TraceResponse{Status: c.Status, Took: c.Took, CRMID: c.CRMID}
			}
		}
		if r.Replay != "" {
			s.Detail += " (replay " + r.Replay + ")"
		}
		if r.Inline {
			s.Detail += " (inline: sent from the enricher's lane)"
		}
		add(s)
	}
	for _, p := range parked {
		if hasParkedRecord(in.Records, p.Stage) {
			continue // the record says it; State says where it is now
		}
		// The record is written after the park: a crash can lose it, the
		// parked stream still has the message.
		d := p.Reason
		if p.Error != "" && p.Error != p.Reason {
			d += ": " + p.Error
		}
		add(TraceStep{At: p.At, Step: "parked", Stage: p.Stage, Stream: names.ParkedStream(), Seq: p.Seq, Detail: d})
	}
}

func hasParkedRecord(recs []Stored, stage topology.Stage) bool {
	for _, r := range recs {
		if r.Step == StepParked && r.Stage == stage {
			return true
		}
	}
	return false
}

// attemptDetail describes one CRM attempt: what was sent, the answer (or
// why none came), the recorded headers and the CRM's answer body.
func attemptDetail(r Record) string {
	c := r.CRM
	if c == nil {
		return ""
	}
	var b strings.Builder
	if c.Uncertain {
		b.WriteString("UNCERTAIN ")
	}
	if c.Kind != "" {
		b.WriteString(c.Kind + " ")
	}
	b.WriteString(c.Method + " " + c.Path + " → ")
	switch {
	case c.Status != 0:
		b.WriteString(strconv.Itoa(c.Status))
	case c.Error != "":
		b.WriteString(c.Error)
	default:
		b.WriteString("no request sent")
	}
	if c.Took > 0 {
		b.WriteString(" in " + c.Took.Round(time.Microsecond).String())
	}
	if c.CRMID != "" {
		b.WriteString(", CRM id " + c.CRMID)
	}
	if c.Note != "" {
		b.WriteString(" (" + c.Note + ")")
	}
	for _, k := range slices.Sorted(maps.Keys(c.Headers)) {
		b.WriteString("; " + k + ": " + c.Headers[k])
	}
	if c.Response != "" {
		b.WriteString("; answer: " + c.Response)
	}
	fmt.Fprintf(&b, "; attempt %d, delivery %d", r.Attempts, r.Deliveries)
	return b.String()
}

func deliveredDetail(r Record) string {
	var b strings.Builder
	if c := r.CRM; c != nil {
		if c.Method != "" {
			b.WriteString("CRM " + c.Method + " " + c.Path + " → ")
		}
		if c.Status != 0 {
			b.WriteString(strconv.Itoa(c.Status))
		}
		if c.Took > 0 {
			b.WriteString(" in " + c.Took.Round(time.Microsecond).String())
		}
		if c.CRMID != "" {
			b.WriteString(", CRM id " + c.CRMID)
		}
		if c.Note != "" {
			b.WriteString(" (" + c.Note + ")")
		}
		for _, k := range slices.Sorted(maps.Keys(c.Headers)) {
			b.WriteString("; " + k + ": " + c.Headers[k])
		}
		if c.Latency > 0 {
			b.WriteString("; produce→CRM " + c.Latency.Round(time.Millisecond).String())
		}
	}
	msg := "dispatch message"
	if r.Inline {
		msg = "event"
	}
	fmt.Fprintf(&b, "; attempt %d, delivery %d of the %s", r.Attempts, r.Deliveries, msg)
	return strings.TrimPrefix(b.String(), "; ")
}

// contents fills the payload, the CRM request and the CRM's answer from
// whatever stream still holds them, redacted.
func (tr *Trace) contents(ctx context.Context, js jetstream.JetStream, names topology.Names, in Inputs, red *Redactor) error {
	if len(in.Events) > 0 {
		if m, err := getMsg(ctx, js, names.EventsStream(), in.Events[0].Seq); err != nil {
			return err
		} else if m != nil {
			tr.Payload = red.JSON(m.Data)
		}
	}
	// The request: the dispatch stream, else the parked stream, else the
	// ledger's stored body.
	var req []byte
	from := ""
	if m, err := dispatchMsg(ctx, js, names, topology.KeyToken(tr.Key), tr.EventID); err != nil {
		return err
	} else if m != nil {
		req, from = m.Data, "dispatch stream seq "+strconv.FormatUint(m.Sequence, 10)
		tr.Steps = append(tr.Steps, TraceStep{At: m.Time, Step: "enriched", Stage: topology.StageEnricher,
			Stream: names.DispatchStream(), Seq: m.Sequence, Detail: "CRM request in the dispatch stream now, waiting for the dispatcher"})
	}
	for _, p := range in.Parked {
		if p.ID != tr.EventID || p.Stage != topology.StageDispatcher {
			continue
		}
		m, err := getMsg(ctx, js, names.ParkedStream(), p.Seq)
		if err != nil {
			return err
		}
		if m == nil {
			continue
		}
		if req == nil {
			req, from = m.Data, "parked stream seq "+strconv.FormatUint(m.Sequence, 10)
		}
		if st := m.Header.Get(headerCRMStatus); st != "" {
			code, _ := strconv.Atoi(st)
			tr.Response = &TraceResponse{Status: code}
			if body := m.Header.Get(headerCRMResponse); body != "" {
				tr.Response.Body = red.JSON([]byte(body))
			}
		}
	}
	if req != nil {
		var r struct {
			Method, Path, Mode, Object string
			UpdateMethod               string          `json:"update_method"`
			UpdatePath                 string          `json:"update_path"`
			Body                       json.RawMessage `json:"body"`
		}
		if json.Unmarshal(req, &r) == nil {
			tr.Request = &TraceRequest{Method: r.Method, Path: r.Path, Mode: r.Mode, Object: r.Object, Body: red.JSON(r.Body), From: from}
			switch {
			case r.Mode == "update" || r.Path == "":
				tr.Request.Method, tr.Request.Path = r.UpdateMethod, r.UpdatePath
			case r.Mode == "upsert":
				// Create, or update once the CRM id is known.
				tr.Request.UpdateMethod, tr.Request.UpdatePath = r.UpdateMethod, r.UpdatePath
			}
		}
		return nil
	}
	for i := len(in.Records) - 1; i >= 0; i-- {
		if r := in.Records[i]; r.Step == StepEnriched && len(r.Body) > 0 {
			tr.Request = &TraceRequest{Body: red.JSON(r.Body), From: "ledger (enriched record)"}
			break
		}
	}
	return nil
}

// actions adds the operators' recorded actions on the key (replays,
// discards, from the audit stream). A missing audit stream adds none.
func (tr *Trace) actions(ctx context.Context, src *Source, key string) {
	n := src.Names
	_, _ = src.read(ctx, readOpts{what: "audit", stream: n.AuditStream(), filters: []string{n.Config().Prefix + ".audit.>"}},
		func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			var r auditRecord
			if json.Unmarshal(m.Data(), &r) != nil || r.Key != key || r.Action == "" {
				return true, nil
			}
			at := r.At
			if at.IsZero() {
				at = md.Timestamp
			}
			d := "by " + r.By
			if r.Reason != "" {
				d += ": " + r.Reason
			}
			tr.Steps = append(tr.Steps, TraceStep{At: at, Step: "operator " + r.Action, Stage: r.Stage,
				Stream: n.AuditStream(), Seq: md.Sequence.Stream, Detail: d})
			return true, nil
		})
}

func getMsg(ctx context.Context, js jetstream.JetStream, stream string, seq uint64) (*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	return m, err
}

// dispatchMsg finds event id's CRM request in the dispatch stream.
func dispatchMsg(ctx context.Context, js jetstream.JetStream, names topology.Names, tok, id string) (*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, names.DispatchStream())
	if err != nil {
		return nil, err
	}
	filter := names.DispatchFilter("", tok)
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if EventID(m.Data, m.Header, names.DispatchStream(), m.Sequence) == id {
			return m, nil
		}
		seq = m.Sequence + 1
	}
}
