package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
)

// What a CRM request was, in attempt records.
const (
	kindCreate = "create"
	kindUpdate = "update"
	kindSend   = "send"
	kindFind   = "find"
)

// Exactly-once effect with a CRM that ignores Idempotency-Key
// (docs/crm-guide.md, "Find and adopt"):
//
// A create is uncertain when the CRM may have created the record without
// Sluice learning its id: no complete answer came (timeout, connection
// cut, body cut), the CRM answered 5xx, 408 or 409, or the dispatch
// message is a redelivery (another process, or this one before a crash,
// had it and may have sent it). Before such a create is sent again the
// type's crm.find looks the record up; a found id is adopted: stored in
// the id map and the event applied to that record as an update (see
// adopt for why the update is sent). Not found: the create is sent again.
// A 409/422 whose body names the existing record (crm.conflict_id_from)
// is adopted the same way.

// uncertainSet remembers, by event id, the creates whose last attempt in
// this process ended without a certain outcome. At most one message per
// partition is in hand, so it stays small; a redelivery after a crash is
// caught by its delivery count instead.
type uncertainSet struct {
	mu sync.Mutex
	m  map[string]struct{}
}

func (u *uncertainSet) add(id string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]struct{}{}
	}
	if len(u.m) < 4096 {
		u.m[id] = struct{}{}
	}
}

func (u *uncertainSet) has(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.m[id]
	return ok
}

func (u *uncertainSet) del(id string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, id)
}

// uncertainOutcome reports whether a create that got res may still have
// created the record.
func uncertainOutcome(res response) bool {
	switch {
	case res.NotSent: // waiting for the rate limit or a token
		return false
	case res.Err != nil: // timeout, connection error, answer cut short
		return true
	case res.Status >= 500, res.Status == http.StatusRequestTimeout, res.Status == http.StatusConflict:
		return true
	}
	return false
}

// findFirst runs the type's crm.find before a create when the create is
// uncertain (or always, with find.before_create). done is true when o
// settles the message (adopted, or the lookup failed); false: send the
// create.
func (s *Service) findFirst(ctx context.Context, m *lane.Msg, r crmreq.Request) (o lane.Outcome, done bool) {
	if s.probed.has(r.EventID) {
		return lane.Outcome{}, false // the probe's create was answered: call uses its answer
	}
	again := m.Redelivered()
	uncertain := again || s.uncertain.has(r.EventID)
	if r.Find == nil {
		if again {
			s.recordAttempt(m, r, &ledger.CRMCall{Method: r.Method, Path: r.Path, Kind: kindCreate, Uncertain: true,
				Note: "redelivered; no crm.find configured: the create is sent again blind (the CRM may now hold two records)"})
		}
		return lane.Outcome{}, false
	}
	if !uncertain && !r.Find.BeforeCreate {
		return lane.Outcome{}, false
	}
	id, found, o, ok := s.lookupAtCRM(ctx, m, r, uncertain)
	switch {
	case !ok:
		return o, true
	case !found:
		return lane.Outcome{}, false
	}
	why := "found by crm.find before the create"
	if uncertain {
		why = "found by crm.find after an uncertain create"
	}
	return s.adopt(ctx, m, r, id, why), true
}

// createFailed handles a create that did not get a usable 2xx: a
// conflict naming the existing record is adopted; an uncertain outcome is
// remembered (the next attempt looks the record up first), and a 409
// without an id is looked up right away instead of parked.
func (s *Service) createFailed(ctx context.Context, m *lane.Msg, r crmreq.Request, res response, o lane.Outcome) lane.Outcome {
	if res.Status == 0 && res.Err == nil {
		return o // nothing was sent (fenced late duplicate, or undecodable)
	}
	if (res.Status == http.StatusConflict || res.Status == http.StatusUnprocessableEntity) && res.Err == nil && r.ConflictIDFrom != "" {
		if code, err := s.jq.get(r.ConflictIDFrom); err == nil {
			if id, err := findID(ctx, code, res.Body); err == nil && id != "" {
				s.adoptedConflicts.Add(1)
				return s.adopt(ctx, m, r, id, "the CRM's duplicate check answered "+strconv.Itoa(res.Status)+" naming it")
			}
		}
	}
	if !uncertainOutcome(res) {
		return o
	}
	s.uncertain.add(r.EventID)
	if res.Status == http.StatusConflict && r.Find != nil {
		id, found, o2, ok := s.lookupAtCRM(ctx, m, r, true)
		switch {
		case !ok:
			return o2
		case found:
			return s.adopt(ctx, m, r, id, "found by crm.find after a 409")
		}
	}
	return o
}

// lookupAtCRM sends the request's find. ok false: o settles the message
// (the lookup failed: retry, or park when it cannot even be built).
func (s *Service) lookupAtCRM(ctx context.Context, m *lane.Msg, r crmreq.Request, uncertain bool) (id string, found bool, o lane.Outcome, ok bool) {
	f := r.Find
	fr, code, res, err := s.sendFind(ctx, r)
	if err != nil {
		return "", false, lane.Park("undecodable request", err, nil), false
	}
	if res.Err != nil && ctx.Err() != nil {
		return "", false, lane.Retry(s.cfg.Retry.Delay, res.Err), false
	}
	s.metrics.status(res)
	s.finds.Add(1)
	c := s.attemptCall(res, f.Method, f.Path, kindFind)
	c.Uncertain = uncertain
	switch {
	case res.Err == nil && res.Status/100 == 2:
		id, err = findID(ctx, code, res.Body)
		if err != nil {
			c.Note = "the answer gave no usable id: " + err.Error() + "; retrying"
			s.recordAttempt(m, r, c)
			return "", false, s.failure(m, fr, res, f.Method, f.Path, kindFind), false
		}
	case res.Err == nil && res.Status == http.StatusNotFound:
	default:
		c.Note = "lookup failed; the create waits for it"
		s.recordAttempt(m, r, c)
		return "", false, s.failure(m, fr, res, f.Method, f.Path, kindFind), false
	}
	c.Response = "" // a search answer lists records: not kept when it worked
	if id == "" {
		c.Note = "not found at the CRM: the create is sent"
		if uncertain {
			c.Note += " again"
		}
	} else {
		c.CRMID = id
		c.Note = "found at the CRM: adopted"
		s.found.Add(1)
	}
	s.recordAttempt(m, r, c)
	return id, id != "", lane.Outcome{}, true
}

// sendFind sends r's crm.find (the request fr, with the find's body); code
// reads the id from its answer (findID). err: the find could not be built
// (its id_from or its request): the caller parks.
func (s *Service) sendFind(ctx context.Context, r crmreq.Request) (fr crmreq.Request, code *catalog.JQ, res response, err error) {
	if code, err = s.jq.get(r.Find.IDFrom); err != nil {
		return r, nil, response{}, err
	}
	fr = r
	fr.Body = r.Find.Body
	res, err = s.crm.do(ctx, fr, r.Find.Method, r.Find.Path)
	return fr, code, res, err
}

// adopt takes over an existing CRM record for the event's entity: the
// event is applied to it as an update (update_method update_path), then
// its id is stored in the id map and the message acked.
//
// Why the update is sent even when the record may have been made by this
// very event's lost create: the found record may as well have been made
// by someone else (a duplicate check matching another record, a contact
// that existed before Sluice, an earlier event of the key), and then the
// event's content would be lost; applying the same body to a record that
// already has it changes nothing (the update is idempotent by content).
// It costs one request per adoption. A type without update_path (plain
// create with nothing to update by) only adopts the id, and the delivered
// record says the body was not applied.
func (s *Service) adopt(ctx context.Context, m *lane.Msg, r crmreq.Request, id, why string) lane.Outcome {
	s.adopted.Add(1)
	if r.UpdatePath == "" {
		s.uncertain.del(r.EventID)
		return s.remember(ctx, m, r, id, &ledger.CRMCall{Kind: kindCreate,
			Note: why + "; adopted (no update_path: the event's body was not applied)"})
	}
	path := strings.ReplaceAll(r.UpdatePath, "{crm_id}", url.PathEscape(id))
	res, o, ok := s.call(ctx, m, r, r.UpdateMethod, path, false, kindUpdate)
	if !ok {
		return o
	}
	s.uncertain.del(r.EventID)
	return s.remember(ctx, m, r, id, &ledger.CRMCall{Method: r.UpdateMethod, Path: path, Status: res.Status, Took: res.Took,
		Kind: kindUpdate, Headers: s.recordedHeaders(res),
		Note: why + "; adopted the existing record and applied the event to it as an update"})
}

// findID runs code over a lookup or conflict answer: the id, or "" when
// it gives nothing, null, false or "" (not found).
func findID(ctx context.Context, code *catalog.JQ, body []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("%w: answer is not JSON", ErrNoIDInResponse)
	}
	res, ok := code.First(ctx, v, idFromTimeout)
	if !ok {
		return "", nil
	}
	switch x := res.(type) {
	case error:
		return "", fmt.Errorf("%w: id_from: %w", ErrNoIDInResponse, x)
	case nil:
		return "", nil
	case bool:
		if !x {
			return "", nil
		}
	case string:
		if len(x) > maxIDLen {
			return "", fmt.Errorf("%w: over-long id", ErrNoIDInResponse)
		}
		return x, nil
	case json.Number:
		return x.String(), nil
	case int:
		return strconv.Itoa(x), nil
	case *big.Int:
		return x.String(), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("%w: id_from gave %v", ErrNoIDInResponse, x)
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	}
	return "", fmt.Errorf("%w: id_from gave a %T, want a string, a number or null", ErrNoIDInResponse, res)
}
