package watchdog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

//go:embed static
var staticFS embed.FS

// Audit actions of the status page, published on <prefix>.audit.<action>
// (topology.AuditRecord).
const (
	AuditPause   = topology.AuditPause
	AuditResume  = topology.AuditResume
	AuditReplay  = topology.AuditReplay
	AuditDiscard = topology.AuditDiscard
)

// maxActionBody bounds a control request's JSON body.
const maxActionBody = 4 << 10

// pageRequestTimeout bounds the JetStream work of one read request.
const pageRequestTimeout = 10 * time.Second

// replayRounds is how many replay rounds one Replay click runs.
const replayRounds = 3

// AuditRecord is what every control action of the page publishes on
// <prefix>.audit.<action> (the audit stream stores it) before it acts. It
// lives in topology: a recreated lane consumer takes over an operator's
// pause from these records (Names.OperatorPause).
type AuditRecord = topology.AuditRecord

// actionBody is the optional JSON body of a control request.
type actionBody struct {
	Reason string `json:"reason"`
	// For is a pause duration ("30m"); default watchdog.page.pause_for.
	For string `json:"for"`
}

// decodeAction decodes a control request body (empty is allowed) strictly.
func decodeAction(r io.Reader) (actionBody, error) {
	var b actionBody
	data, err := io.ReadAll(io.LimitReader(r, maxActionBody+1))
	if err != nil {
		return b, err
	}
	if len(data) > maxActionBody {
		return b, fmt.Errorf("body larger than %d bytes", maxActionBody)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return b, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, fmt.Errorf("body: %w", err)
	}
	if dec.More() {
		return b, errors.New("body: trailing data after the JSON object")
	}
	b.Reason = strings.TrimSpace(b.Reason)
	if len(b.Reason) > 500 {
		return b, errors.New("reason: at most 500 characters")
	}
	return b, nil
}

// Page serves the live status page, its JSON API and the operator's
// control endpoints. Get it from Watchdog.Page.
type Page struct {
	w   *Watchdog
	cfg PageConfig

	mu     sync.Mutex
	parked *lane.Parked
	srv    *http.Server
	ln     net.Listener

	deliv deliveryCache // the last audit summary and oldest undelivered (pageaudit.go)
}

func newPage(w *Watchdog, cfg PageConfig) *Page { return &Page{w: w, cfg: cfg} }

// Page returns the status page. Mount Page().Handler() on an HTTP listener
// (sluice run mounts it on ops.addr when watchdog.page.addr is empty).
func (w *Watchdog) Page() *Page { return w.page }

func (p *Page) admin(ctx context.Context) (*lane.Parked, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked == nil {
		a, err := lane.OpenParked(ctx, p.w.js, p.w.names)
		if err != nil {
			return nil, err
		}
		p.parked = a
	}
	return p.parked, nil
}

// Handler serves GET / (the page), GET /static/…, GET /api/status and the
// POST control endpoints.
func (p *Page) Handler() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, sub, "index.html")
	})
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(sub)))
	mux.HandleFunc("GET /api/status", p.status)
	mux.HandleFunc("GET /api/history", p.history)
	mux.HandleFunc("POST /api/lanes/{consumer}/pause", p.control(p.pause))
	mux.HandleFunc("POST /api/lanes/{consumer}/resume", p.control(p.resume))
	mux.HandleFunc("POST /api/parked/{stage}/{key}/replay", p.control(p.replay))
	mux.HandleFunc("POST /api/parked/{stage}/{key}/discard", p.control(p.discard))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
}

func (p *Page) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), pageRequestTimeout)
	defer cancel()
	writeJSON(w, http.StatusOK, redactStatus(p.collect(ctx), p.w.deps.Redactor))
}

// actionFunc does one authorized control action and returns its result.
// With act false it only validates the request and fills in rec.
type actionFunc func(ctx context.Context, r *http.Request, rec *AuditRecord, body actionBody, act bool) (any, error)

// httpError is an error with an HTTP status.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errStatus(code int, format string, a ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, a...)}
}

// control checks the token, decodes the body, lets f fill in the audit
// record, publishes it, and only then lets f act.
func (p *Page) control(f actionFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, ok := p.authorize(w, r)
		if !ok {
			return
		}
		body, err := decodeAction(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		rec := &AuditRecord{By: who, At: p.w.now().UTC(), Source: "status-page", Remote: r.RemoteAddr, Reason: body.Reason}
		ctx := r.Context()
		if _, err := f(ctx, r, rec, body, false); err != nil {
			p.fail(w, err)
			return
		}
		if err := p.audit(ctx, rec); err != nil {
			p.w.log.Error().Err(err).Str("action", rec.Action).Msg("status page: audit record not stored; action refused")
			writeError(w, http.StatusServiceUnavailable, "audit record not stored, nothing done: "+err.Error())
			return
		}
		res, err := f(ctx, r, rec, body, true)
		ev := p.w.log.Warn()
		if err != nil {
			ev = p.w.log.Error().Err(err)
		}
		ev.Str("action", rec.Action).Str("by", rec.By).Str("stage", string(rec.Stage)).Str("key", rec.Key).
			Str("consumer", rec.Consumer).Str("reason", rec.Reason).Msg("status page: operator action")
		if err != nil {
			p.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// authorize checks the bearer token in constant time. No token configured:
// 403; a missing or wrong token: 401.
func (p *Page) authorize(w http.ResponseWriter, r *http.Request) (string, bool) {
	if p.cfg.Token == "" {
		writeError(w, http.StatusForbidden, "control endpoints are disabled: set watchdog.page.token")
		return "", false
	}
	got, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(p.cfg.Token))
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 || !found {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
		writeError(w, http.StatusUnauthorized, "operator token missing or wrong")
		return "", false
	}
	return p.cfg.TokenName, true
}

func (p *Page) audit(ctx context.Context, rec *AuditRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	m := nats.NewMsg(p.w.names.AuditSubject(rec.Action))
	m.Data = b
	_, err = p.w.js.PublishMsg(ctx, m)
	return err
}

func (p *Page) fail(w http.ResponseWriter, err error) {
	var he *httpError
	switch {
	case errors.As(err, &he):
		writeError(w, he.code, he.msg)
	case errors.Is(err, lane.ErrNotParked):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, lane.ErrReplaying), errors.Is(err, lane.ErrReparked):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusBadGateway, err.Error())
	}
}

// lane finds the stream of a lane consumer name (dispatcher-003).
func (p *Page) lane(consumer string) (topology.Stage, string, error) {
	for _, stage := range laneStages {
		stream, _ := p.w.names.StageFilter(stage, 0)
		for part := 0; stream != "" && part < p.w.names.Partitions(); part++ {
			if p.w.names.ConsumerName(stage, part) == consumer {
				return stage, stream, nil
			}
		}
	}
	return "", "", errStatus(http.StatusNotFound, "no lane %q", consumer)
}

func (p *Page) pause(ctx context.Context, r *http.Request, rec *AuditRecord, body actionBody, act bool) (any, error) {
	stage, stream, err := p.lane(r.PathValue("consumer"))
	if err != nil {
		return nil, err
	}
	d := p.cfg.PauseFor
	if body.For != "" {
		if d, err = time.ParseDuration(body.For); err != nil || d <= 0 {
			return nil, errStatus(http.StatusBadRequest, "for: %q is not a positive duration", body.For)
		}
	}
	until := rec.At.Add(d)
	rec.Action, rec.Stage, rec.Consumer, rec.Until = AuditPause, stage, r.PathValue("consumer"), &until
	if !act {
		return nil, nil
	}
	res, err := p.w.js.PauseConsumer(ctx, stream, rec.Consumer, until)
	if err != nil {
		return nil, err
	}
	return map[string]any{"consumer": rec.Consumer, "paused": res.Paused, "paused_until": res.PauseUntil.UTC()}, nil
}

func (p *Page) resume(ctx context.Context, r *http.Request, rec *AuditRecord, _ actionBody, act bool) (any, error) {
	stage, stream, err := p.lane(r.PathValue("consumer"))
	if err != nil {
		return nil, err
	}
	rec.Action, rec.Stage, rec.Consumer = AuditResume, stage, r.PathValue("consumer")
	if !act {
		return nil, nil
	}
	if _, err := p.w.js.ResumeConsumer(ctx, stream, rec.Consumer); err != nil {
		return nil, err
	}
	return map[string]any{"consumer": rec.Consumer, "paused": false}, nil
}

// parkedTarget validates the stage and key of a parked-key request and
// checks that the key is parked.
func (p *Page) parkedTarget(ctx context.Context, r *http.Request, rec *AuditRecord) (*lane.Parked, error) {
	stage := topology.Stage(r.PathValue("stage"))
	if !containsStage(laneStages, stage) {
		return nil, errStatus(http.StatusNotFound, "no stage %q", stage)
	}
	key := r.PathValue("key")
	if key == "" {
		return nil, errStatus(http.StatusBadRequest, "key is empty")
	}
	rec.Stage, rec.Key = stage, key
	admin, err := p.admin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := admin.Get(ctx, stage, key); err != nil {
		return nil, err
	}
	return admin, nil
}

func (p *Page) replay(ctx context.Context, r *http.Request, rec *AuditRecord, _ actionBody, act bool) (any, error) {
	rec.Action = AuditReplay
	admin, err := p.parkedTarget(ctx, r, rec)
	if err != nil || !act {
		return nil, err
	}
	res, err := admin.Replay(ctx, rec.Stage, rec.Key, p.cfg.ReplayWait, replayRounds)
	if err != nil {
		return nil, err
	}
	return map[string]any{"stage": rec.Stage, "key": rec.Key, "rounds": res.Rounds,
		"republished": res.Republished, "unblocked": res.Unblocked}, nil
}

func (p *Page) discard(ctx context.Context, r *http.Request, rec *AuditRecord, body actionBody, act bool) (any, error) {
	rec.Action = AuditDiscard
	if body.Reason == "" {
		return nil, errStatus(http.StatusBadRequest, "reason: required to discard")
	}
	admin, err := p.parkedTarget(ctx, r, rec)
	if err != nil || !act {
		return nil, err
	}
	n, err := admin.Discard(ctx, rec.Stage, rec.Key, body.Reason, rec.By)
	if err != nil && !errors.Is(err, lane.ErrNoAuditStream) {
		return nil, err
	}
	return map[string]any{"stage": rec.Stage, "key": rec.Key, "discarded": n}, nil
}

func containsStage(list []topology.Stage, s topology.Stage) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// start opens the page's own listener (watchdog.page.addr set).
func (p *Page) start() error {
	if !p.cfg.ownListener() {
		return nil
	}
	ln, err := net.Listen("tcp", p.cfg.Addr)
	if err != nil {
		return fmt.Errorf("watchdog.page.addr: %w", err)
	}
	p.mu.Lock()
	p.ln = ln
	p.srv = &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second}
	srv := p.srv
	p.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.w.log.Error().Err(err).Msg("status page listener")
		}
	}()
	p.w.log.Info().Bool("control", p.cfg.Token != "").Msgf("status page on http://%s/", ln.Addr())
	return nil
}

// Addr is the page's own listen address, or "" when it has none.
func (p *Page) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return ""
	}
	return p.ln.Addr().String()
}

func (p *Page) stop(ctx context.Context) error {
	p.mu.Lock()
	srv := p.srv
	p.srv, p.ln = nil, nil
	p.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}
