package ingest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Media types of POST /v1/events.
const (
	MediaJSON   = "application/json"     // one envelope
	MediaNDJSON = "application/x-ndjson" // a batch, one envelope per line
)

// Handler returns the HTTP API: POST /v1/events, GET /healthz, GET /readyz.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", s.handleEvents)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	// Everything else answers in the same JSON shape as the API (net/http's
	// defaults are plain text).
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow, ok := routes[r.URL.Path]; ok {
			w.Header().Set("Allow", allow)
			writeJSON(w, http.StatusMethodNotAllowed, Response{Error: fmt.Sprintf(
				"method %s not allowed on %s: use %s", r.Method, r.URL.Path, allow)})
			return
		}
		writeJSON(w, http.StatusNotFound, Response{Error: fmt.Sprintf(
			"no such path %s: events go to POST /v1/events", r.URL.Path)})
	})
	return mux
}

// routes are the paths Handler serves and their methods.
var routes = map[string]string{"/v1/events": http.MethodPost, "/healthz": http.MethodGet, "/readyz": http.MethodGet}

func (s *Service) handleEvents(w http.ResponseWriter, r *http.Request) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	start := time.Now()
	producer, ok := s.authenticate(r)
	if !ok {
		s.stats.unauthorized.Add(1)
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice-ingest"`)
		writeJSON(w, http.StatusUnauthorized, Response{Error: ErrUnauthorized.Error()})
		reason := "unknown bearer token"
		if scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " "); !strings.EqualFold(scheme, "Bearer") {
			reason = "no bearer token"
		}
		// Sampled (a burst of 10 a second): a misconfigured or hostile
		// client must not flood the log. Never the token itself.
		s.refusalLog.Warn().Str("remote", r.RemoteAddr).Str("path", r.URL.Path).Str("reason", reason).
			Msg("request refused: 401")
		return
	}
	log := s.log.With().Str("producer", producer).Str("remote", r.RemoteAddr).Logger()
	batch, err := batchMedia(r.Header.Get("Content-Type"))
	if err != nil {
		s.stats.rejectedRequests.Add(1)
		writeJSON(w, http.StatusUnsupportedMediaType, Response{Error: err.Error()})
		return
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		s.stats.rejectedRequests.Add(1)
		writeJSON(w, http.StatusRequestEntityTooLarge, Response{Error: fmt.Sprintf(
			"%s: body exceeds %d bytes (ingest.max_body_bytes)", ErrTooLarge, s.cfg.MaxBodyBytes)})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.stats.rejectedRequests.Add(1)
			writeJSON(w, http.StatusRequestEntityTooLarge, Response{Error: fmt.Sprintf(
				"%s: body exceeds %d bytes (ingest.max_body_bytes)", ErrTooLarge, s.cfg.MaxBodyBytes)})
			return
		}
		log.Debug().Err(err).Msg("reading request body")
		writeJSON(w, http.StatusBadRequest, Response{Error: "reading body: " + err.Error()})
		return
	}
	status, resp := s.process(r.Context(), request{body: body, batch: batch, source: producer, publish: true})
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, resp)
	ev := log.Debug()
	if status >= 500 {
		ev = log.Warn()
	}
	ev.Int("status", status).Int("events", max(len(resp.Results), len(resp.Errors))).
		Dur("took", time.Since(start)).Func(func(e *zerolog.Event) {
		if len(resp.Errors) > 0 {
			e.Int("index", resp.Errors[0].Index).Str("field", resp.Errors[0].Field)
		}
	}).Msg("POST /v1/events")
}

// batchMedia reports whether a Content-Type is the NDJSON batch format, or
// ErrUnsupportedMediaType.
func batchMedia(ct string) (bool, error) {
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		switch strings.ToLower(mt) {
		case MediaJSON:
			return false, nil
		case MediaNDJSON:
			return true, nil
		}
	}
	return false, fmt.Errorf("%w %q: send %s (one event) or %s (a batch)", ErrUnsupportedMediaType, ct, MediaJSON, MediaNDJSON)
}

// authenticate returns the producer name of the request's bearer token (""
// when no tokens are configured) and whether the request may proceed. Every
// configured token is compared, in constant time, against SHA-256 digests so
// neither the match position nor the token length leaks through timing.
func (s *Service) authenticate(r *http.Request) (string, bool) {
	if len(s.tokens) == 0 {
		return "", true
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	name, found := "", 0
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			name, found = t.name, 1
		}
	}
	return name, found == 1
}

func (s *Service) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.deps.NC.IsConnected() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable",
			"error": "not connected to NATS (" + s.deps.NC.Status().String() + ")"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.deps.JS.AccountInfo(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "JetStream: " + err.Error()})
		return
	}
	if _, err := s.deps.JS.Stream(ctx, s.deps.Names.EventsStream()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable",
			"error": fmt.Sprintf("events stream %s: %v", s.deps.Names.EventsStream(), err)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen: only our own plain types are written
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the reply"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
