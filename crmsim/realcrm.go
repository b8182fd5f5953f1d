package crmsim

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"sluice.dev/mesh/crmreq"
)

// ProfileReal is Config.Profile for a CRM that behaves like the real ones
// Sluice meets (RealConfig): it ignores Idempotency-Key, keeps each
// record's fields, checks duplicates, loses answers after committing,
// wants OAuth2 tokens and enforces a quota.
const ProfileReal = "real"

// FaultDropped is Record.Fault of a create whose answer was dropped after
// the record was stored (the connection was cut).
const FaultDropped = "dropped"

// RealConfig configures the "real" profile (Config.Profile "real").
//
// API (JSON bodies, objects are the first path segment):
//
//	POST   /api/<object>          create → 201 {"id": …, fields…}; a duplicate → 409 {"error":"duplicate","existing_id":…}
//	PATCH  /api/<object>/<id>     merge the body's fields → 200 (PUT replaces them)
//	GET    /api/<object>/<id>     the record
//	GET    /api/<object>?f=v&…    search: {"data": [records whose fields f equal v]}
//	POST   /oauth/token           client_credentials or refresh_token grant (OAuth2)
type RealConfig struct {
	// Unique maps an object to the body field its duplicate check
	// compares, e.g. {contacts: email}: a create whose field equals an
	// existing record's is answered 409 naming the existing id. Objects
	// not listed accept duplicates (as most CRMs do for deals or notes).
	Unique map[string]string `yaml:"unique" json:"unique"`
	// DropAfterCommit is the share (0..1) of creates whose answer is lost:
	// the record is stored, then the connection is cut without an answer.
	DropAfterCommit float64 `yaml:"drop_after_commit" json:"drop_after_commit"`
	// ErrorHeader, when set, names a header carrying a human-readable
	// reason on every 4xx answer (e.g. "X-Crm-Error").
	ErrorHeader string `yaml:"error_header" json:"error_header"`
	// OAuth2, when set, requires a bearer token on every API request.
	OAuth2 *OAuth2Server `yaml:"oauth2" json:"oauth2"`
	// Quota, when Requests > 0, answers 429 with Retry-After (seconds to
	// the end of the window) beyond Requests API requests per Window.
	Quota Quota `yaml:"quota" json:"quota"`
}

// OAuth2Server is the profile's token endpoint (POST /oauth/token).
type OAuth2Server struct {
	// ClientID and ClientSecret authenticate the client_credentials grant
	// (HTTP basic auth or form fields). Defaults "sluice", "sluice-secret".
	ClientID     string `yaml:"client_id" json:"client_id"`
	ClientSecret string `yaml:"client_secret" json:"client_secret"`
	// RefreshToken is accepted by the refresh_token grant (it is not
	// rotated). Default "sluice-refresh".
	RefreshToken string `yaml:"refresh_token" json:"refresh_token"`
	// TokenTTL is an access token's life (expires_in). Default 60s.
	TokenTTL time.Duration `yaml:"token_ttl" json:"token_ttl"`
}

// Quota is a fixed-window request quota.
type Quota struct {
	Requests int           `yaml:"requests" json:"requests"`
	Window   time.Duration `yaml:"window" json:"window"`
}

func (c RealConfig) withDefaults() RealConfig {
	if o := c.OAuth2; o != nil {
		oo := *o
		if oo.ClientID == "" {
			oo.ClientID = "sluice"
		}
		if oo.ClientSecret == "" {
			oo.ClientSecret = "sluice-secret"
		}
		if oo.RefreshToken == "" {
			oo.RefreshToken = "sluice-refresh"
		}
		if oo.TokenTTL == 0 {
			oo.TokenTTL = time.Minute
		}
		c.OAuth2 = &oo
	}
	if c.Quota.Requests > 0 && c.Quota.Window == 0 {
		c.Quota.Window = 10 * time.Second
	}
	return c
}

func (c RealConfig) validate() error {
	var errs []error
	if err := checkRate(c.DropAfterCommit); err != nil {
		errs = append(errs, fmt.Errorf("simulator.real.drop_after_commit: %w", err))
	}
	if c.Quota.Requests < 0 || c.Quota.Window < 0 {
		errs = append(errs, errors.New("simulator.real.quota: requests and window must be >= 0"))
	}
	if o := c.OAuth2; o != nil && o.TokenTTL < 0 {
		errs = append(errs, errors.New("simulator.real.oauth2.token_ttl: must be >= 0"))
	}
	return errors.Join(errs...)
}

// RealRecord is one record of the real profile's store.
type RealRecord struct {
	ID     string         `json:"id"`
	Object string         `json:"object"`
	Fields map[string]any `json:"fields"`
	// Writes are the bodies applied to it (the create's first), in order.
	Writes []map[string]any `json:"writes"`
}

// realCRM is the state of the real profile. Guarded by Sim.mu.
type realCRM struct {
	cfg     RealConfig
	rng     *mrand.Rand
	records map[string]*RealRecord // by id
	order   []string               // ids in creation order
	seq     map[string]int
	tokens  map[string]time.Time // access token -> expiry
	issued  int                  // tokens issued
	window  time.Time            // quota window start
	used    int                  // requests in the window
	dropped []string             // event ids of dropped create answers
	status  map[int]int
}

func newRealCRM(cfg RealConfig, seed int64) *realCRM {
	return &realCRM{cfg: cfg, rng: mrand.New(mrand.NewPCG(uint64(seed), 0xc7a1)), records: map[string]*RealRecord{},
		seq: map[string]int{}, tokens: map[string]time.Time{}, status: map[int]int{}}
}

// realAnswer is what the real profile decided for one request.
type realAnswer struct {
	status int
	body   []byte
	header map[string]string
	drop   bool // cut the connection instead of answering
}

func (s *Sim) serveReal(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	d, j := s.latency.Load(), s.jitter.Load()
	if j > 0 {
		d += mrand.Int64N(j)
	}
	if d > 0 {
		time.Sleep(time.Duration(d))
	}
	rec := Record{At: time.Now(), Method: r.Method, Path: r.URL.Path, BodySize: int64(len(body))}
	h := r.Header
	rec.IdempotencyKey = header(h, crmreq.HeaderIdempotencyKey)
	rec.Key = header(h, crmreq.HeaderKey)
	rec.EventID = header(h, crmreq.HeaderEventID)
	rec.Type = header(h, crmreq.HeaderType)
	rec.OccurredAt = header(h, crmreq.HeaderOccurredAt)

	s.mu.Lock()
	a := s.decideRealLocked(r, body, &rec)
	rc := s.real
	rc.status[a.status]++
	if r.URL.Path != "/oauth/token" {
		s.countLocked(&rec)
	}
	s.mu.Unlock()

	if a.drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler) // cuts the connection too
	}
	wh := w.Header()
	wh["Content-Type"] = hdrJSON
	for k, v := range a.header {
		wh.Set(k, v)
	}
	if a.status >= 400 && a.status < 500 && rc.cfg.ErrorHeader != "" {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(a.body, &e)
		wh.Set(rc.cfg.ErrorHeader, e.Error)
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

func jsonBody(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func errAnswer(status int, msg string) realAnswer {
	return realAnswer{status: status, body: jsonBody(map[string]string{"error": msg})}
}

// decideRealLocked applies one request to the store. Sim.mu is held.
func (s *Sim) decideRealLocked(r *http.Request, body []byte, rec *Record) realAnswer {
	rc := s.real
	if r.URL.Path == "/oauth/token" {
		a := rc.token(r, body, rec.At)
		rec.Status = a.status
		return a
	}
	a := s.decideRealAPILocked(r, body, rec)
	rec.Status = a.status
	return a
}

func (s *Sim) decideRealAPILocked(r *http.Request, body []byte, rec *Record) realAnswer {
	rc := s.real
	if !s.outageUntil.IsZero() && rec.At.Before(s.outageUntil) {
		rec.Fault = FaultOutage
		return errAnswer(http.StatusServiceUnavailable, "service unavailable")
	}
	if o := rc.cfg.OAuth2; o != nil {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		exp, known := rc.tokens[tok]
		if !ok || !known || !rec.At.Before(exp) {
			a := errAnswer(http.StatusUnauthorized, "invalid_token")
			a.header = map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}
			return a
		}
	}
	if q := rc.cfg.Quota; q.Requests > 0 {
		if rec.At.Sub(rc.window) >= q.Window {
			rc.window, rc.used = rec.At, 0
		}
		if rc.used >= q.Requests {
			left := rc.window.Add(q.Window).Sub(rec.At)
			a := errAnswer(http.StatusTooManyRequests, "quota exceeded")
			a.header = map[string]string{"Retry-After": strconv.Itoa(int((left + time.Second - 1) / time.Second))}
			return a
		}
		rc.used++
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if !ok {
		return errAnswer(http.StatusNotFound, "not found")
	}
	object, target, hasTarget := strings.Cut(rest, "/")
	if object == "" || strings.Contains(target, "/") {
		return errAnswer(http.StatusNotFound, "not found")
	}
	switch {
	case r.Method == http.MethodPost && !hasTarget:
		return s.realCreateLocked(object, body, rec)
	case r.Method == http.MethodGet && !hasTarget:
		return rc.search(object, r.URL.Query())
	case hasTarget && target != "":
		rr := rc.records[target]
		if rr == nil || rr.Object != object {
			return errAnswer(http.StatusNotFound, "no such record")
		}
		rec.CRMID = target
		switch r.Method {
		case http.MethodGet:
			return realAnswer{status: http.StatusOK, body: rr.json()}
		case http.MethodPatch, http.MethodPut:
			f, err := decodeFields(body)
			if err != nil {
				return errAnswer(http.StatusBadRequest, "body is not a JSON object")
			}
			if r.Method == http.MethodPut {
				rr.Fields = map[string]any{}
			}
			for k, v := range f {
				rr.Fields[k] = v
			}
			rr.Writes = append(rr.Writes, f)
			return realAnswer{status: http.StatusOK, body: rr.json()}
		}
	}
	return errAnswer(http.StatusMethodNotAllowed, "method not allowed")
}

func (s *Sim) realCreateLocked(object string, body []byte, rec *Record) realAnswer {
	rc := s.real
	f, err := decodeFields(body)
	if err != nil {
		return errAnswer(http.StatusBadRequest, "body is not a JSON object")
	}
	if field := rc.cfg.Unique[object]; field != "" {
		if v, ok := f[field]; ok {
			for _, id := range rc.order {
				if rr := rc.records[id]; rr.Object == object && equalJSON(rr.Fields[field], v) {
					a := realAnswer{status: http.StatusConflict, body: jsonBody(map[string]string{
						"error": "duplicate " + field, "existing_id": id})}
					return a
				}
			}
		}
	}
	rc.seq[object]++
	id := object + "-" + strconv.Itoa(rc.seq[object])
	rr := &RealRecord{ID: id, Object: object, Fields: f, Writes: []map[string]any{cloneFields(f)}}
	rc.records[id] = rr
	rc.order = append(rc.order, id)
	rec.CRMID = id
	if rc.cfg.DropAfterCommit > 0 && rc.rng.Float64() < rc.cfg.DropAfterCommit {
		rec.Fault = FaultDropped
		rc.dropped = append(rc.dropped, rec.ID())
		return realAnswer{status: http.StatusCreated, drop: true}
	}
	return realAnswer{status: http.StatusCreated, body: rr.json()}
}

func (rc *realCRM) search(object string, q map[string][]string) realAnswer {
	out := []json.RawMessage{}
	for _, id := range rc.order {
		rr := rc.records[id]
		if rr.Object != object {
			continue
		}
		match := true
		for k, vs := range q {
			if len(vs) == 0 || fmt.Sprint(rr.Fields[k]) != vs[0] {
				match = false
				break
			}
		}
		if match {
			out = append(out, rr.json())
		}
	}
	return realAnswer{status: http.StatusOK, body: jsonBody(map[string]any{"data": out})}
}

// token serves POST /oauth/token.
func (rc *realCRM) token(r *http.Request, body []byte, now time.Time) realAnswer {
	o := rc.cfg.OAuth2
	if o == nil || r.Method != http.MethodPost {
		return errAnswer(http.StatusNotFound, "not found")
	}
	form, err := parseForm(body)
	if err != nil {
		return errAnswer(http.StatusBadRequest, "invalid_request")
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	switch form.Get("grant_type") {
	case "client_credentials":
		if id != o.ClientID || secret != o.ClientSecret {
			return errAnswer(http.StatusUnauthorized, "invalid_client")
		}
	case "refresh_token":
		if form.Get("refresh_token") != o.RefreshToken {
			return errAnswer(http.StatusBadRequest, "invalid_grant")
		}
	default:
		return errAnswer(http.StatusBadRequest, "unsupported_grant_type")
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	rc.tokens[tok] = now.Add(o.TokenTTL)
	rc.issued++
	return realAnswer{status: http.StatusOK, body: jsonBody(map[string]any{"access_token": tok, "token_type": "Bearer",
		"expires_in": int(o.TokenTTL / time.Second), "refresh_token": o.RefreshToken})}
}

func (rr *RealRecord) json() []byte {
	m := make(map[string]any, len(rr.Fields)+1)
	for k, v := range rr.Fields {
		m[k] = v
	}
	m["id"] = rr.ID
	return jsonBody(m)
}

func decodeFields(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var f map[string]any
	if err := dec.Decode(&f); err != nil || f == nil {
		return nil, errors.New("not a JSON object")
	}
	delete(f, "id")
	return f, nil
}

func cloneFields(f map[string]any) map[string]any {
	out := make(map[string]any, len(f))
	for k, v := range f {
		out[k] = v
	}
	return out
}

func equalJSON(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// RevokeTokens makes every access token issued so far invalid (the next
// request with one gets 401), as an admin revoking the app's sessions.
func (s *Sim) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.real != nil {
		clear(s.real.tokens)
	}
}

// RealRecords returns a copy of the real profile's records, in creation
// order (nil for the default profile).
func (s *Sim) RealRecords() []RealRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.real == nil {
		return nil
	}
	out := make([]RealRecord, 0, len(s.real.order))
	for _, id := range s.real.order {
		rr := s.real.records[id]
		c := RealRecord{ID: rr.ID, Object: rr.Object, Fields: cloneFields(rr.Fields)}
		for _, w := range rr.Writes {
			c.Writes = append(c.Writes, cloneFields(w))
		}
		out = append(out, c)
	}
	return out
}

// RealStats are the real profile's counters.
type RealStats struct {
	// Statuses counts answers by status (token endpoint included; a
	// dropped answer counts as the 201 it would have been).
	Statuses map[int]int `json:"statuses"`
	// TokensIssued counts access tokens handed out.
	TokensIssued int `json:"tokens_issued"`
	// Dropped lists the event ids (X-Sluice-Event-Id) of the creates
	// whose answer was dropped after the record was stored.
	Dropped []string `json:"dropped"`
	Records int      `json:"records"`
}

// RealStats returns the real profile's counters (zero for the default).
func (s *Sim) RealStats() RealStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.real == nil {
		return RealStats{}
	}
	st := RealStats{Statuses: map[int]int{}, TokensIssued: s.real.issued, Dropped: append([]string(nil), s.real.dropped...),
		Records: len(s.real.order)}
	for k, v := range s.real.status {
		st.Statuses[k] = v
	}
	sort.Strings(st.Dropped)
	return st
}

func parseForm(b []byte) (url.Values, error) { return url.ParseQuery(string(b)) }
