package crmsim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("250ms", "1m30s").
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ConfigPatch changes the failure settings at run time; nil fields are
// left as they are. It is the body of POST /_sim/config.
type ConfigPatch struct {
	ErrorRate  *float64  `json:"error_rate,omitempty"`
	Latency    *Duration `json:"latency,omitempty"`
	Jitter     *Duration `json:"jitter,omitempty"`
	RetryAfter *string   `json:"retry_after,omitempty"`
	// Reject adds per-event rules (event id -> 4xx status); status 0
	// removes a rule.
	Reject map[string]int `json:"reject,omitempty"`
}

// Validate reports every out-of-range field.
func (p ConfigPatch) Validate() error {
	var errs []error
	if p.ErrorRate != nil {
		if err := checkRate(*p.ErrorRate); err != nil {
			errs = append(errs, fmt.Errorf("error_rate: %w", err))
		}
	}
	if p.Latency != nil && *p.Latency < 0 {
		errs = append(errs, fmt.Errorf("latency: must be >= 0"))
	}
	if p.Jitter != nil && *p.Jitter < 0 {
		errs = append(errs, fmt.Errorf("jitter: must be >= 0"))
	}
	for id, st := range p.Reject {
		if st != 0 && (st < 400 || st > 499) {
			errs = append(errs, fmt.Errorf("reject[%q]: status %d must be a 4xx or 0", id, st))
		}
	}
	return errors.Join(errs...)
}

// Knobs are the failure settings in force.
type Knobs struct {
	ErrorRate   float64    `json:"error_rate"`
	Latency     Duration   `json:"latency"`
	Jitter      Duration   `json:"jitter"`
	RetryAfter  string     `json:"retry_after,omitempty"`
	Rejects     int        `json:"rejects"`
	OutageUntil *time.Time `json:"outage_until,omitempty"`
}

// Apply validates p and applies it; nothing changes when it is invalid.
func (s *Sim) Apply(p ConfigPatch) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadControl, err)
	}
	if p.Latency != nil || p.Jitter != nil {
		d, j := time.Duration(s.latency.Load()), time.Duration(s.jitter.Load())
		if p.Latency != nil {
			d = time.Duration(*p.Latency)
		}
		if p.Jitter != nil {
			j = time.Duration(*p.Jitter)
		}
		s.SetLatency(d, j)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.ErrorRate != nil {
		s.errorRate = *p.ErrorRate
	}
	if p.RetryAfter != nil {
		s.retryAfter = nil
		if *p.RetryAfter != "" {
			s.retryAfter = []string{*p.RetryAfter}
		}
	}
	for id, st := range p.Reject {
		if st == 0 {
			delete(s.reject, id)
		} else {
			s.reject[id] = st
		}
	}
	return nil
}

// Knobs returns the failure settings in force.
func (s *Sim) Knobs() Knobs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.knobsLocked()
}

func (s *Sim) knobsLocked() Knobs {
	k := Knobs{ErrorRate: s.errorRate, Latency: Duration(s.latency.Load()), Jitter: Duration(s.jitter.Load()),
		Rejects: len(s.reject)}
	if len(s.retryAfter) > 0 {
		k.RetryAfter = s.retryAfter[0]
	}
	if !s.outageUntil.IsZero() && time.Now().Before(s.outageUntil) {
		u := s.outageUntil
		k.OutageUntil = &u
	}
	return k
}

// Stats are the sim's counters, the body of GET /_sim/stats.
type Stats struct {
	// Attempts is every request recorded; Delivered the 2xx answers.
	Attempts  int `json:"attempts"`
	Delivered int `json:"delivered"`
	// Duplicates counts 2xx answers for an event id that already had one.
	Duplicates int `json:"duplicates"`
	// IdempotentReplays counts creates answered with the id an earlier
	// create with the same Idempotency-Key got.
	IdempotentReplays int `json:"idempotent_replays"`
	// Injected counts requests answered with an injected error.
	Injected int `json:"injected"`
	// Status counts answers by HTTP status.
	Status map[int]int `json:"status"`
	// Since is the start or last Reset; PerSecond[i] the 2xx answers in
	// second i after it; Rate the 2xx answers in the last full second.
	Since     time.Time `json:"since"`
	PerSecond []int     `json:"per_second"`
	Rate      int       `json:"rate"`
	// Knobs are the failure settings in force.
	Knobs Knobs `json:"knobs"`
}

// Stats returns the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	out := Stats{
		Attempts: st.attempts, Delivered: st.delivered, Duplicates: st.duplicates,
		IdempotentReplays: st.replays, Injected: st.injected, Status: map[int]int{},
		Since: st.start, PerSecond: append([]int{}, st.perSec...), Knobs: s.knobsLocked(),
	}
	for code, n := range st.status {
		if n > 0 {
			out.Status[code] = n
		}
	}
	if last := int(time.Since(st.start)/time.Second) - 1; last >= 0 && last < len(st.perSec) {
		out.Rate = st.perSec[last]
	}
	return out
}

// maxControlBody bounds control request bodies (an expected map of a
// million events is about 40 MB).
const maxControlBody = 512 << 20

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadControl, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing data after the JSON value", ErrBadControl)
	}
	return nil
}

// DecodeExpected decodes the body of POST /_sim/check: a JSON object
// mapping each key to its event ids in produced order.
func DecodeExpected(r io.Reader) (map[string][]string, error) {
	var m map[string][]string
	if err := decodeStrict(r, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("%w: expected a JSON object of key -> [ids]", ErrBadControl)
	}
	return m, nil
}

// DecodePatch decodes and validates the body of POST /_sim/config.
func DecodePatch(r io.Reader) (ConfigPatch, error) {
	var p ConfigPatch
	if err := decodeStrict(r, &p); err != nil {
		return ConfigPatch{}, err
	}
	if err := p.Validate(); err != nil {
		return ConfigPatch{}, fmt.Errorf("%w: %w", ErrBadControl, err)
	}
	return p, nil
}

func (s *Sim) controlMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_sim/outage", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("for"))
		if err != nil {
			writeError(w, fmt.Errorf("%w: for=%q: want a duration like 5s: %w", ErrBadControl, r.URL.Query().Get("for"), err))
			return
		}
		s.Outage(d)
		s.log.Info().Dur("for", d).Msg("outage")
		writeJSON(w, http.StatusOK, s.Knobs())
	})
	mux.HandleFunc("POST /_sim/config", func(w http.ResponseWriter, r *http.Request) {
		p, err := DecodePatch(http.MaxBytesReader(w, r.Body, 1<<20))
		if err == nil {
			err = s.Apply(p)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		k := s.Knobs()
		s.log.Info().Float64("error_rate", k.ErrorRate).Dur("latency", time.Duration(k.Latency)).
			Dur("jitter", time.Duration(k.Jitter)).Msg("config changed")
		writeJSON(w, http.StatusOK, k)
	})
	mux.HandleFunc("GET /_sim/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Knobs())
	})
	mux.HandleFunc("POST /_sim/reject", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		st, err := strconv.Atoi(q.Get("status"))
		if err != nil || q.Get("id") == "" || (st != 0 && (st < 400 || st > 499)) {
			writeError(w, fmt.Errorf("%w: want ?id=<event id>&status=<4xx, or 0 to remove>", ErrBadControl))
			return
		}
		s.Reject(q.Get("id"), st)
		writeJSON(w, http.StatusOK, s.Knobs())
	})
	mux.HandleFunc("POST /_sim/reset", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		writeJSON(w, http.StatusOK, s.Knobs())
	})
	mux.HandleFunc("GET /_sim/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("GET /_sim/report", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.SelfCheck())
	})
	mux.HandleFunc("POST /_sim/check", func(w http.ResponseWriter, r *http.Request) {
		exp, err := DecodeExpected(http.MaxBytesReader(w, r.Body, maxControlBody))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.Check(exp))
	})
	mux.HandleFunc("GET /_sim/records", s.serveRecords)
	return mux
}

// serveRecords writes records as NDJSON, from ?since=<index> on.
func (s *Sim) serveRecords(w http.ResponseWriter, r *http.Request) {
	since := 0
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, fmt.Errorf("%w: since=%q: want a record index >= 0", ErrBadControl, v))
			return
		}
		since = n
	}
	snap := s.snapshot()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Sim-Records", strconv.Itoa(snap.n))
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	const page = 4096
	buf := make([]Record, 0, page)
	for i := since; i < snap.n; i += page {
		buf = snap.copyRange(buf[:0], i, min(i+page, snap.n))
		for j := range buf {
			if err := enc.Encode(&buf[j]); err != nil {
				return // client went away
			}
		}
	}
	_ = bw.Flush()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrBadControl):
		status = http.StatusBadRequest
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
