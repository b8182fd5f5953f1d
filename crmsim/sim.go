// Package crmsim is a CRM stand-in for end-to-end tests and benchmarks: a
// small REST CRM (create with idempotency keys, update by id) with injected
// failures (error rate, outages, per-event rejections, latency) that records
// every request and checks the recorded deliveries against the order the
// events were produced in.
//
// It is built to take 15-30k requests/s on two cores next to the system
// under test: one short mutex-guarded section per request, an append-only
// chunked record log, no per-request logging.
package crmsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"sluice.dev/mesh/crmreq"
)

// Sim is a running (or servable) CRM simulator. All methods are safe for
// concurrent use.
type Sim struct {
	cfg     Config
	log     zerolog.Logger
	control http.Handler

	latency atomic.Int64 // ns
	jitter  atomic.Int64 // ns

	mu          sync.Mutex
	rng         *rand.Rand
	errorRate   float64
	outageUntil time.Time
	reject      map[string]int
	rejectLeft  map[string]int // RejectTimes: answers left before the rule goes
	retryAfter  []string
	st          *state
	real        *realCRM // profile "real"; nil otherwise
	journal     *journal // Config.StateFile; nil without

	srvMu sync.Mutex
	srv   *http.Server
	url   string
	done  chan struct{}
}

// state is everything Reset clears. Guarded by Sim.mu.
type state struct {
	start   time.Time
	recs    *recordLog
	seq     map[string]int      // object -> last number handed out
	idem    map[string]string   // Idempotency-Key -> CRM id
	created map[string]struct{} // CRM ids
	okIDs   map[string]uint32   // event id -> 2xx answers

	attempts, delivered, duplicates, replays, injected int
	status                                             [600]int
	perSec                                             []int
}

func newState(capacity int) *state {
	return &state{
		start:   time.Now(),
		recs:    newRecordLog(capacity),
		seq:     map[string]int{},
		idem:    make(map[string]string, 1024),
		created: make(map[string]struct{}, 1024),
		okIDs:   make(map[string]uint32, 1024),
	}
}

// New returns a sim for cfg (after defaults). It does not listen until Start.
func New(cfg Config, logger zerolog.Logger) (*Sim, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sim{cfg: cfg, log: logger.With().Str("component", "crmsim").Logger()}
	s.control = s.controlMux()
	st := newState(cfg.RecordCapacity)
	if cfg.StateFile != "" && cfg.Profile == "" {
		j, err := openJournal(cfg.StateFile, st)
		if err != nil {
			return nil, err
		}
		s.journal = j
	}
	s.resetLocked(st)
	return s, nil
}

// Config returns the configuration the sim was created with.
func (s *Sim) Config() Config { return s.cfg }

// Start listens on Config.Addr and serves until Stop. ctx bounds only the
// start itself.
func (s *Sim) Start(ctx context.Context) error {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.srv != nil {
		return ErrStarted
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("simulator.addr: listen %s: %w", s.cfg.Addr, err)
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          nil,
	}
	s.url = "http://" + ln.Addr().String()
	s.done = make(chan struct{})
	srv, done := s.srv, s.done
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("serve")
		}
	}()
	s.log.Info().Str("url", s.url).Float64("error_rate", s.cfg.ErrorRate).
		Dur("latency", s.cfg.Latency).Dur("jitter", s.cfg.Jitter).Msg("crm simulator listening")
	return nil
}

// Stop stops serving, waiting for in-flight requests until ctx ends.
// Records stay readable after Stop.
func (s *Sim) Stop(ctx context.Context) error {
	s.srvMu.Lock()
	srv, done := s.srv, s.done
	s.srvMu.Unlock()
	if srv == nil {
		return ErrNotStarted
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	s.log.Info().Int("attempts", s.Attempts()).Int("delivered", s.Delivered()).Msg("crm simulator stopped")
	s.mu.Lock()
	if s.journal != nil {
		err = errors.Join(err, s.journal.close())
		s.journal = nil
	}
	s.mu.Unlock()
	return err
}

// Created is the number of records the sim knows it created (those of
// Config.StateFile included).
func (s *Sim) Created() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.st.created)
}

// URL is the base URL ("http://127.0.0.1:port") once started, "" before.
func (s *Sim) URL() string {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	return s.url
}

// Handler serves the CRM API and the /_sim/ control API, for use without
// Start (e.g. httptest.NewServer(sim.Handler())).
func (s *Sim) Handler() http.Handler { return s }

// SetErrorRate sets the fraction (0..1) of requests answered 503; values
// outside the range are clamped.
func (s *Sim) SetErrorRate(f float64) {
	if !(f >= 0) {
		f = 0
	}
	s.mu.Lock()
	s.errorRate = min(f, 1)
	s.mu.Unlock()
}

// Outage answers every request with 503 until now+d; d <= 0 ends an outage.
func (s *Sim) Outage(d time.Duration) {
	s.mu.Lock()
	if d <= 0 {
		s.outageUntil = time.Time{}
	} else {
		s.outageUntil = time.Now().Add(d)
	}
	s.mu.Unlock()
}

// SetLatency sets the delay added to every answer: d plus a uniform random
// 0..jitter. Negative values count as 0.
func (s *Sim) SetLatency(d, jitter time.Duration) {
	s.latency.Store(int64(max(d, 0)))
	s.jitter.Store(int64(max(jitter, 0)))
}

// Reject makes every request for event id (X-Sluice-Event-Id, or
// Idempotency-Key) answer status: a 4xx (a rejection), or a 5xx (the
// event fails transiently until the rule is removed; in-process only, the
// control API takes 4xx); any other status (e.g. 0) removes the rule.
func (s *Sim) Reject(id string, status int) {
	s.mu.Lock()
	if status >= 400 && status <= 599 {
		s.reject[id] = status
	} else {
		delete(s.reject, id)
	}
	delete(s.rejectLeft, id)
	s.mu.Unlock()
}

// RejectTimes makes the next n requests for event id answer status, as
// Reject does, and then removes the rule (a request that fails n times and
// then succeeds). In-process only.
func (s *Sim) RejectTimes(id string, status, n int) {
	s.Reject(id, status)
	if n < 1 || status < 400 || status > 599 {
		s.Reject(id, 0)
		return
	}
	s.mu.Lock()
	s.rejectLeft[id] = n
	s.mu.Unlock()
}

// Reset forgets every record, counter and CRM object and restores the
// failure settings of the Config the sim was created with (ending any
// outage).
func (s *Sim) Reset() {
	st := newState(s.cfg.RecordCapacity) // allocate outside the lock
	s.mu.Lock()
	if s.journal != nil {
		if err := s.journal.truncate(); err != nil {
			s.log.Warn().Err(err).Msg("reset: state file not emptied")
		}
	}
	s.resetLocked(st)
	s.mu.Unlock()
	s.log.Info().Msg("reset")
}

func (s *Sim) resetLocked(st *state) {
	c := s.cfg
	s.rng = rand.New(rand.NewPCG(uint64(c.Seed), 0x5eed))
	s.errorRate = c.ErrorRate
	s.outageUntil = time.Time{}
	s.reject = make(map[string]int, len(c.Reject))
	s.rejectLeft = map[string]int{}
	for id, st := range c.Reject {
		s.reject[id] = st
	}
	s.retryAfter = nil
	if c.RetryAfter != "" {
		s.retryAfter = []string{c.RetryAfter}
	}
	s.latency.Store(int64(c.Latency))
	s.jitter.Store(int64(c.Jitter))
	st.start = time.Now()
	s.st = st
	s.real = nil
	if c.Profile == ProfileReal {
		s.real = newRealCRM(c.Real, c.Seed)
	}
}

// Delivered is the number of 2xx answers (duplicates included).
func (s *Sim) Delivered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.delivered
}

// Attempts is the number of requests recorded.
func (s *Sim) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.attempts
}

// Records returns a copy of every record, in order.
func (s *Sim) Records() []Record { return s.RecordsSince(0) }

// RecordsSince returns a copy of the records from index since on.
func (s *Sim) RecordsSince(since int) []Record {
	snap := s.snapshot()
	since = max(since, 0)
	if since >= snap.n {
		return nil
	}
	return snap.copyRange(make([]Record, 0, snap.n-since), since, snap.n)
}

func (s *Sim) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.recs.snapshot()
}

var (
	hdrJSON      = []string{"application/json"}
	bodyEmpty    = []byte("{}")
	bodyNotFound = []byte(`{"error":"not found"}`)
	bodyUnavail  = []byte(`{"error":"service unavailable"}`)
	bodyRejected = []byte(`{"error":"rejected"}`)
	idBufs       = sync.Pool{New: func() any { b := make([]byte, 0, 128); return &b }}
)

func header(h http.Header, canonical string) string {
	if v := h[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// ServeHTTP answers the CRM API, and the control API under /_sim/.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.control.ServeHTTP(w, r)
		return
	}
	if s.cfg.Profile == ProfileReal {
		s.serveReal(w, r)
		return
	}
	rec := Record{At: time.Now(), Method: r.Method, Path: r.URL.Path}
	if r.Body != nil {
		rec.BodySize, _ = io.Copy(io.Discard, r.Body)
	}
	d, j := s.latency.Load(), s.jitter.Load()
	if j > 0 {
		d += rand.Int64N(j)
	}
	if d > 0 {
		time.Sleep(time.Duration(d))
	}
	h := r.Header
	rec.IdempotencyKey = header(h, crmreq.HeaderIdempotencyKey)
	rec.Key = header(h, crmreq.HeaderKey)
	rec.EventID = header(h, crmreq.HeaderEventID)
	rec.Type = header(h, crmreq.HeaderType)
	rec.OccurredAt = header(h, crmreq.HeaderOccurredAt)

	s.mu.Lock()
	retryAfter := s.retryAfter
	s.decideLocked(&rec)
	s.countLocked(&rec)
	s.mu.Unlock()

	wh := w.Header()
	wh["Content-Type"] = hdrJSON
	var body []byte
	switch {
	case rec.Status == http.StatusServiceUnavailable || rec.Status == http.StatusTooManyRequests:
		if retryAfter != nil {
			wh["Retry-After"] = retryAfter
		}
		body = bodyUnavail
	case rec.Status == http.StatusNotFound:
		body = bodyNotFound
	case rec.Status >= 400:
		body = bodyRejected
	case rec.CRMID != "":
		bp := idBufs.Get().(*[]byte)
		b := append((*bp)[:0], `{"id":`...)
		b = strconv.AppendQuote(b, rec.CRMID)
		b = append(b, '}')
		w.WriteHeader(rec.Status)
		_, _ = w.Write(b)
		*bp = b
		idBufs.Put(bp)
		return
	default:
		body = bodyEmpty
	}
	w.WriteHeader(rec.Status)
	_, _ = w.Write(body)
}

// decideLocked injects a fault or applies the request, setting Status,
// Fault and CRMID.
func (s *Sim) decideLocked(rec *Record) {
	id := rec.ID()
	switch {
	case !s.outageUntil.IsZero() && rec.At.Before(s.outageUntil):
		rec.Status, rec.Fault = http.StatusServiceUnavailable, FaultOutage
		return
	case id != "" && s.reject[id] != 0:
		rec.Status, rec.Fault = s.reject[id], FaultReject
		if left, ok := s.rejectLeft[id]; ok {
			if left <= 1 {
				delete(s.reject, id)
				delete(s.rejectLeft, id)
			} else {
				s.rejectLeft[id] = left - 1
			}
		}
		return
	case s.errorRate > 0 && s.rng.Float64() < s.errorRate:
		rec.Status, rec.Fault = http.StatusServiceUnavailable, FaultError
		return
	}
	rec.Status = http.StatusOK
	rest, ok := strings.CutPrefix(rec.Path, "/api/")
	if !ok {
		return
	}
	object, target, hasTarget := strings.Cut(rest, "/")
	if object == "" {
		return
	}
	st := s.st
	switch rec.Method {
	case http.MethodPost:
		if hasTarget {
			return
		}
		if k := rec.IdempotencyKey; k != "" {
			if crmID, seen := st.idem[k]; seen {
				rec.CRMID = crmID
				st.replays++
				return
			}
		}
		n, known := st.seq[object]
		if !known {
			object = strings.Clone(object)
		}
		n++
		crmID := object + "-" + strconv.Itoa(n)
		if s.journal != nil {
			if err := s.journal.add(crmID, rec.IdempotencyKey); err != nil {
				s.log.Warn().Err(err).Msg("state file write failed; answering 503")
				rec.Status, rec.Fault = http.StatusServiceUnavailable, FaultError
				return
			}
		}
		st.seq[object] = n
		rec.CRMID = crmID
		st.created[rec.CRMID] = struct{}{}
		if rec.IdempotencyKey != "" {
			st.idem[rec.IdempotencyKey] = rec.CRMID
		}
		rec.Status = http.StatusCreated
	case http.MethodPatch, http.MethodPut:
		if !hasTarget || target == "" || strings.Contains(target, "/") {
			return
		}
		if _, ok := st.created[target]; !ok {
			rec.Status = http.StatusNotFound
			return
		}
		rec.CRMID = target
	}
}

// countLocked appends the record and updates the counters.
func (s *Sim) countLocked(rec *Record) {
	st := s.st
	st.recs.append(rec)
	st.attempts++
	if rec.Status >= 0 && rec.Status < len(st.status) {
		st.status[rec.Status]++
	}
	if rec.Fault != "" {
		st.injected++
	}
	if !rec.OK() {
		return
	}
	st.delivered++
	sec := int(rec.At.Sub(st.start) / time.Second)
	if sec >= 0 {
		for len(st.perSec) <= sec {
			st.perSec = append(st.perSec, 0)
		}
		st.perSec[sec]++
	}
	if id := rec.ID(); id != "" {
		c := st.okIDs[id]
		if c > 0 {
			st.duplicates++
		}
		st.okIDs[id] = c + 1
	}
}
