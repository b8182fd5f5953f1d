package dispatcher

import (
	"encoding/json"
	"net/http"
	"strings"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
)

// Redacted stands in for a header value Preview does not show.
const Redacted = "[redacted]"

// Preview is one HTTP request the dispatcher would send for a CRM request
// (`sluice try`): method, URL, headers and body. Header values that may be
// secrets (every dispatcher.crm.headers value but Accept, Content-Type and
// User-Agent, and Authorization) are Redacted.
type Preview struct {
	// When says in which case this request is sent ("" for send and
	// create; upsert has one for "no CRM id known" and one for "a CRM id
	// is known").
	When   string          `json:"when,omitempty"`
	Method string          `json:"method"`
	URL    string          `json:"url"`
	Header http.Header     `json:"header"`
	Body   json.RawMessage `json:"body,omitempty"`
}

// PreviewRequests returns the request(s) r makes the dispatcher send to
// cfg's CRM, sending nothing. {crm_id} stays in an update path.
func PreviewRequests(cfg CRMConfig, r crmreq.Request) []Preview {
	base := strings.TrimRight(cfg.URL, "/")
	h := previewHeader(cfg, r)
	create := Preview{Method: r.Method, URL: base + r.Path, Header: h, Body: r.Body}
	update := Preview{Method: r.UpdateMethod, URL: base + r.UpdatePath, Header: h, Body: r.Body}
	switch r.Mode {
	case catalog.ModeUpdate:
		update.When = "the CRM id of " + r.Object + " " + r.IDKey + " is known (else the event is parked)"
		return []Preview{update}
	case catalog.ModeUpsert:
		create.When = "no CRM id is known for " + r.Object + " " + r.IDKey
		update.When = "the CRM id of " + r.Object + " " + r.IDKey + " is known"
		return []Preview{create, update}
	}
	return []Preview{create}
}

// previewHeader is the header crmClient.once sends (preview_test.go keeps
// the two in step), secrets redacted.
func previewHeader(cfg CRMConfig, r crmreq.Request) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", userAgent)
	for k, v := range cfg.Headers {
		switch http.CanonicalHeaderKey(k) {
		case "Accept", "Content-Type", "User-Agent":
			h.Set(k, v)
		default:
			h.Set(k, Redacted)
		}
	}
	if newAuthorizer(cfg, nil) != nil {
		h.Set("Authorization", Redacted)
	}
	h.Set("Idempotency-Key", r.EventID)
	h.Set("X-Sluice-Event-Id", r.EventID)
	h.Set("X-Sluice-Key", r.Key)
	h.Set("X-Sluice-Type", r.Type)
	if !r.OccurredAt.IsZero() {
		h.Set("X-Sluice-Occurred-At", r.OccurredAt.UTC().Format("2006-01-02T15:04:05.999999999Z07:00"))
	}
	return h
}
