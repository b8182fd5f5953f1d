package dispatcher

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
)

// recordAttempt writes the ledger record of one CRM attempt that did not
// end the event's delivery (Deps.Ledger), so sluice trace shows every
// attempt and sluice audit the uncertain creates.
func (s *Service) recordAttempt(m *lane.Msg, r crmreq.Request, c *ledger.CRMCall) {
	if s.deps.Ledger == nil {
		return
	}
	rec := s.record(ledger.StepAttempt, m, r)
	rec.CRM = c
	s.deps.Ledger.Write(rec)
}

// attemptCall summarises a CRM exchange for an attempt record: status or
// why no answer came (without the URL, whose query may carry personal
// data), the answer body cut to 2 KiB (the ledger writer redacts the
// sensitive fields) and the headers named in crm.record_headers.
func (s *Service) attemptCall(res response, method, path, kind string) *ledger.CRMCall {
	c := &ledger.CRMCall{Method: method, Path: pathOnly(path), Status: res.Status, Took: res.Took, Kind: kind,
		Headers: s.recordedHeaders(res)}
	if res.Err != nil {
		c.Error = transportError(res)
	}
	if len(res.Body) > 0 {
		c.Response = headerSafe(string(res.Body), maxParkedResponse)
	}
	return c
}

// recordedHeaders picks the answer's headers named in crm.record_headers.
func (s *Service) recordedHeaders(res response) map[string]string {
	if len(s.cfg.CRM.RecordHeaders) == 0 || res.Header == nil {
		return nil
	}
	var out map[string]string
	for _, name := range s.cfg.CRM.RecordHeaders {
		if v := res.Header.Get(name); v != "" {
			if out == nil {
				out = map[string]string{}
			}
			out[http.CanonicalHeaderKey(name)] = headerSafe(v, 512)
		}
	}
	return out
}

// pathOnly drops the query of a path: a lookup's query names the record
// searched for (an email, a phone number), which the ledger must not keep.
func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i] + "?…"
	}
	return p
}

// transportError says why no answer came, without the request URL.
func transportError(res response) string {
	if res.Timeout {
		return "timeout"
	}
	var ue *url.Error
	if errors.As(res.Err, &ue) {
		return "connection error: " + ue.Err.Error()
	}
	return "connection error"
}
