package dispatcher

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
)

// kvTimeout bounds one CRM id bucket read or write.
const kvTimeout = 5 * time.Second

// Handler returns the lane handler that sends one dispatch message to the
// CRM. It may be run by another lane.Group (tests, e2e); the CRM id bucket
// is opened on first use.
func (s *Service) Handler() lane.Handler { return s.handle }

func (s *Service) handle(ctx context.Context, m *lane.Msg) lane.Outcome {
	r, err := DecodeRequest(m.Data)
	if err != nil {
		return lane.Park("undecodable request", err, nil)
	}
	return s.deliver(ctx, m, r)
}

// deliver sends r, the request of m (a dispatch message, or with
// dispatcher.inline the event an enricher lane has just mapped).
func (s *Service) deliver(ctx context.Context, m *lane.Msg, r crmreq.Request) lane.Outcome {
	switch r.Mode {
	case catalog.ModeSend:
		return s.send(ctx, m, r, r.Method, r.Path, kindSend)
	case catalog.ModeCreate:
		return s.create(ctx, m, r)
	default: // update, upsert
		if id, ok := s.ids.pendingID(r.EventID); ok {
			// An upsert that created the record; only the Put is left.
			return s.remember(ctx, m, r, id, nil)
		}
		kctx, cancel := context.WithTimeout(ctx, kvTimeout)
		id, found, err := s.ids.lookup(kctx, r.Object, r.IDKey)
		cancel()
		if err != nil {
			return s.storeFailed(r, err)
		}
		switch {
		case found:
			path := strings.ReplaceAll(r.UpdatePath, "{crm_id}", url.PathEscape(id))
			return s.send(ctx, m, r, r.UpdateMethod, path, kindUpdate)
		case r.Mode == catalog.ModeUpdate:
			return lane.Park(fmt.Sprintf("no CRM id for %s %s", r.Object, r.IDKey),
				fmt.Errorf("%w: %s", ErrNoCRMID, kvKey(r.Object, r.IDKey)), nil)
		default:
			return s.create(ctx, m, r)
		}
	}
}

// send sends one request whose answer body is not needed.
func (s *Service) send(ctx context.Context, m *lane.Msg, r crmreq.Request, method, path, kind string) lane.Outcome {
	res, o, ok := s.call(ctx, m, r, method, path, false, kind)
	if !ok {
		return o
	}
	return s.delivered(m, r, &ledger.CRMCall{Method: method, Path: path, Status: res.Status, Took: res.Took,
		Headers: s.recordedHeaders(res), Note: probeNote(res)})
}

// probeNote is the delivered record's note for an answer a probe got.
func probeNote(res response) string {
	if res.Probe {
		return "answered to the paused lane's probe; not sent again"
	}
	return ""
}

// create sends a create request and remembers the CRM id it returns.
func (s *Service) create(ctx context.Context, m *lane.Msg, r crmreq.Request) lane.Outcome {
	if id, ok := s.ids.pendingID(r.EventID); ok {
		// The CRM accepted this create earlier; only the Put failed.
		return s.remember(ctx, m, r, id, nil)
	}
	code, err := s.jq.get(r.IDFrom)
	if err != nil {
		return lane.Park("undecodable request", err, nil)
	}
	if o, done := s.findFirst(ctx, m, r); done {
		return o
	}
	res, o, ok := s.call(ctx, m, r, r.Method, r.Path, true, kindCreate)
	if !ok {
		return s.createFailed(ctx, m, r, res, o)
	}
	s.uncertain.del(r.EventID)
	id, err := extractID(ctx, code, res.Body)
	if err != nil {
		return lane.Park("crm id not in create response", err, crmHeaders(res))
	}
	return s.remember(ctx, m, r, id, &ledger.CRMCall{Method: r.Method, Path: r.Path, Status: res.Status, Took: res.Took,
		Headers: s.recordedHeaders(res), Note: probeNote(res)})
}

// remember stores a created record's id; the message is acked only after
// the Put succeeded. c is the CRM's answer, nil when it came on an
// earlier attempt.
func (s *Service) remember(ctx context.Context, m *lane.Msg, r crmreq.Request, id string, c *ledger.CRMCall) lane.Outcome {
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	if err := s.ids.store(kctx, r.EventID, r.Object, r.IDKey, id); err != nil {
		return s.storeFailed(r, err)
	}
	if c == nil {
		c = &ledger.CRMCall{Note: "the CRM accepted it on an earlier attempt; its id was stored now"}
	}
	c.CRMID = id
	return s.delivered(m, r, c)
}

func (s *Service) storeFailed(r crmreq.Request, err error) lane.Outcome {
	s.log.Warn().Err(err).Str("event_id", r.EventID).Str("object", r.Object).
		Msg("crm id store failed; retrying")
	return lane.Retry(s.cfg.Retry.Delay, err)
}

// call sends one request. ok is true for a 2xx answer (with a complete body
// when needBody); otherwise o says what the runner does.
func (s *Service) call(ctx context.Context, m *lane.Msg, r crmreq.Request, method, path string, needBody bool, kind string) (res response, o lane.Outcome, ok bool) {
	// Right before the side effect: has another replica already applied
	// this message (this one is a stale worker holding a late duplicate)?
	// Free unless the message is suspect; see lane.Msg.Fenced.
	switch fenced, err := m.Fenced(ctx); {
	case err != nil:
		return res, lane.Retry(s.cfg.Retry.Delay, fmt.Errorf("lane fence: %w", err)), false
	case fenced:
		s.log.Info().Str("event_id", r.EventID).Int("partition", m.Partition).Uint64("seq", m.StreamSeq).
			Msg("late duplicate: another replica already sent this request; not sending it again")
		return res, lane.Done(), false
	}
	if res, ok := s.probed.take(r.EventID, method, path); ok {
		// The paused lane's probe sent this request and the CRM applied
		// it: its answer is this try's (probe in stepaside.go).
		res.Probe = true
		s.metrics.status(res)
		s.probeAnswersUsed.Add(1)
		s.log.Debug().Str("event_id", r.EventID).Int("partition", m.Partition).Int("status", res.Status).
			Msg("the lane's probe was answered 2xx: its answer is used, the request is not sent again")
		return res, lane.Outcome{}, true
	}
	res, err := s.crm.do(ctx, r, method, path)
	if err != nil {
		return res, lane.Park("undecodable request", err, nil), false
	}
	if res.Err != nil && ctx.Err() != nil {
		// The lane is being stopped hard: hand the message back.
		return res, lane.Retry(s.cfg.Retry.Delay, res.Err), false
	}
	s.metrics.status(res)
	if res.Status/100 == 2 && (res.Err == nil || !needBody) {
		return res, lane.Outcome{}, true
	}
	c := s.attemptCall(res, method, path, kind)
	c.Uncertain = kind == kindCreate && uncertainOutcome(res)
	s.recordAttempt(m, r, c)
	switch {
	case res.Err == nil && res.Status/100 == 4 && !s.RetryPolicy().Retried(res.Status) &&
		s.cfg.policyFor(res.Status) == PolicyPark:
		return res, lane.Park("crm rejected: "+strconv.Itoa(res.Status), &StatusError{Status: res.Status}, crmHeaders(res)), false
	}
	return res, s.failure(m, r, res, method, path, kind), false
}

// failure decides between a retry and a pause by the retry policy: every
// Tries-th failure in a row pauses the partition's consumer.
func (s *Service) failure(m *lane.Msg, r crmreq.Request, res response, method, path, kind string) lane.Outcome {
	err := res.Err
	var ra time.Duration
	if err == nil {
		ra, _ = ParseRetryAfter(res.Header.Get("Retry-After"), time.Now())
		err = &StatusError{Status: res.Status, RetryAfter: ra}
	}
	attempt := m.Failures + 1
	d, pause := s.RetryPolicy().Next(m.Failures, ra)
	inPlace := s.cfg.StepAside.lane().InPlaceTries(m)
	if pause && s.cfg.StepAside.Enabled && m.Failures < inPlace {
		// A replayed request's extra in-place tries may pass retry.tries:
		// they are retries in hand; the lane steps the key aside after them,
		// or, with the circuit open, the tries that follow pause.
		pause = false
	}
	if !pause {
		if s.cfg.StepAside.Enabled {
			d = max(s.headDelay(m.Failures, inPlace), ra) // the step-aside schedule
		}
		s.log.Debug().Err(err).Int("status", res.Status).Int("attempt", attempt).Str("event_id", r.EventID).
			Int("partition", m.Partition).Dur("retry_in", d).Msg("crm request failed; retrying")
		return lane.Retry(d, err).Transient()
	}
	// Debug, like the retries: the lane decides what this Pause becomes.
	// With step-aside and the circuit closed the key steps aside and the
	// partition goes on; only a real pause logs "lane paused" (a warning,
	// with its alert). A warning here said "pausing the outlet" for every
	// third failure of a flaky CRM although nothing paused.
	s.log.Debug().Err(err).Int("status", res.Status).Int("attempt", attempt).Str("event_id", r.EventID).
		Int("partition", m.Partition).Dur("pause", d).Msg("crm request failed; the lane pauses the partition or steps the key aside")
	o := lane.Pause(d, err).Transient()
	if s.cfg.StepAside.Enabled {
		o = o.WithProbe(s.probe(r, method, path, kind, ra))
	}
	return o
}

// delivered counts a request the CRM accepted, reports its produce→CRM
// latency (computed once, here, from the request already decoded) and
// writes its ledger record; the Outcome has the lane wait for the record
// before it acks the message.
func (s *Service) delivered(m *lane.Msg, r crmreq.Request, c *ledger.CRMCall) lane.Outcome {
	d, ok := s.metrics.deliveredOne(r.AcceptedAt)
	if ok && s.deps.OnDelivered != nil {
		s.deps.OnDelivered(d)
	}
	o := lane.Done()
	if s.deps.Ledger != nil {
		o.Durable = s.recordDelivered(m, r, c, d).Wait
	}
	return o
}

// crmHeaders are the parked message's record of the CRM's answer.
func crmHeaders(res response) nats.Header {
	h := nats.Header{}
	h.Set(HeaderCRMStatus, strconv.Itoa(res.Status))
	h.Set(HeaderCRMResponse, headerSafe(string(res.Body), maxParkedResponse))
	return h
}
