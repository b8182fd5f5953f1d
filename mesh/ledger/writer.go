package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/topology"
)

// Retry policy of records whose PubAck failed (off the hot path).
const (
	retryQueueMax  = 1 << 16
	retryWorkers   = 32
	retryAttempts  = 8
	retryTimeout   = 5 * time.Second
	publishTimeout = 10 * time.Second
	stallWait      = 5 * time.Second
)

// WriterConfig configures a Writer.
type WriterConfig struct {
	// MaxPending bounds records awaiting their PubAck (ledger.max_pending).
	// Default 4096.
	MaxPending int
	// SensitiveFields are redacted from Record.Body before it is stored.
	SensitiveFields []string
	// Enriched keeps enriched records (ledger.enriched); without it they
	// are not written (Wants says so first).
	Enriched bool
	// Bodies keeps Record.Body (ledger.bodies); without it the body is
	// dropped before the record is written.
	Bodies bool
	// Logger receives failures (never record bodies).
	Logger zerolog.Logger
	// Counters, if set, are added to (share one per process for metrics).
	Counters *Counters
}

// Counters count a process's ledger writes. The zero value is ready.
type Counters struct {
	// Written counts records handed to the connection.
	Written atomic.Uint64
	// Failed counts publishes the server did not acknowledge (error,
	// timeout, disconnect); each is retried.
	Failed atomic.Uint64
	// Retried counts records stored by a retry.
	Retried atomic.Uint64
	// Dropped counts records given up on: an audit will miss them.
	Dropped atomic.Uint64
}

// Writer publishes ledger records asynchronously. Use one per NATS
// connection, the one whose lanes ack the messages the records are about
// (see the package doc). A nil *Writer writes nothing.
type Writer struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	names topology.Names
	cfg   WriterConfig
	red   *Redactor
	c     *Counters
	log   zerolog.Logger

	mu       sync.Mutex
	queue    []retryItem
	workers  int           // retry workers running
	idle     chan struct{} // closed when the last worker ends; nil when none runs
	lastLog  time.Time     // of a drop; drops are logged at most once a second
	unlogged int
}

type retryItem struct {
	msg *nats.Msg
	err error
}

// NewWriter returns a Writer publishing on nc.
func NewWriter(nc *nats.Conn, names topology.Names, cfg WriterConfig) (*Writer, error) {
	if nc == nil {
		return nil, errors.New("ledger: NewWriter needs a connection")
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4096
	}
	w := &Writer{nc: nc, names: names, cfg: cfg, red: NewRedactor(cfg.SensitiveFields), c: cfg.Counters,
		log: cfg.Logger.With().Str("component", "ledger").Logger()}
	if w.c == nil {
		w.c = &Counters{}
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(publishTimeout),
		jetstream.WithPublishAsyncErrHandler(w.failed))
	if err != nil {
		return nil, err
	}
	w.js = js
	return w, nil
}

// Conn is the connection the Writer publishes on. A service checks that
// it is its lanes' connection.
func (w *Writer) Conn() *nats.Conn {
	if w == nil {
		return nil
	}
	return w.nc
}

// Counters returns the counters the Writer adds to.
func (w *Writer) Counters() *Counters {
	if w == nil {
		return nil
	}
	return w.c
}

// Wants reports whether records of step are written (a nil Writer wants
// none), so a caller can skip building one.
func (w *Writer) Wants(step Step) bool {
	return w != nil && (step != StepEnriched || w.cfg.Enriched || w.cfg.Bodies)
}

// Write publishes r without waiting for the server. Call it before the
// message r is about is acked. It blocks only when MaxPending records are
// awaiting their PubAck (for up to 5s); a record that cannot be sent at
// all is retried in the background and, failing that, counted as dropped.
func (w *Writer) Write(r Record) {
	if !w.Wants(r.Step) {
		return
	}
	if !w.cfg.Bodies {
		r.Body = nil
	} else if len(r.Body) > 0 {
		r.Body = w.red.JSON(r.Body)
	}
	if c := r.CRM; c != nil && c.Response != "" && json.Valid([]byte(c.Response)) {
		cc := *c // the CRM's answer may carry the same personal data as the body
		cc.Response = string(w.red.JSON([]byte(c.Response)))
		r.CRM = &cc
	}
	data := r.appendJSON(make([]byte, 0, 320+len(r.Body)))
	typ, tok := r.Type, r.KeyToken
	if typ == "" {
		typ = "_"
	}
	if tok == "" {
		tok = "_"
	}
	m := &nats.Msg{Subject: w.names.LedgerSubject(string(r.Step), typ, tok), Data: data}
	w.c.Written.Add(1)
	if _, err := w.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait)); err != nil {
		// Not sent (stalled, or the connection is closed): the retry
		// comes after the ack, so it only helps when the process lives.
		w.failed(w.js, m, err)
	}
}

// failed is the async error handler: the record is queued for a retry.
// It must not publish itself (it may run under the JetStream context's
// lock), so retry workers do.
func (w *Writer) failed(_ jetstream.JetStream, m *nats.Msg, err error) {
	w.c.Failed.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) >= retryQueueMax {
		go w.drop(m, err)
		return
	}
	w.queue = append(w.queue, retryItem{msg: m, err: err})
	if w.workers < retryWorkers {
		if w.workers == 0 {
			w.idle = make(chan struct{})
		}
		w.workers++
		go w.retryWorker()
	}
}

// retryWorker republishes queued records until the queue is empty.
func (w *Writer) retryWorker() {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.workers--
			if w.workers == 0 {
				close(w.idle)
				w.idle = nil
			}
			w.mu.Unlock()
			return
		}
		it := w.queue[0]
		w.queue = w.queue[1:]
		w.mu.Unlock()
		w.retry(it)
	}
}

// retry republishes one record and waits for its PubAck; a repeat of a
// record the server did store is skipped by readers (Record.ID). It starts at
// once: during a reconnect the publish waits in the connection's buffer
// and goes out first thing after it, so the window in which a crash loses
// the record is as short as it can be.
func (w *Writer) retry(it retryItem) {
	backoff := 50 * time.Millisecond
	err := it.err
	for range retryAttempts {
		if w.nc.IsClosed() {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), retryTimeout)
		m := &nats.Msg{Subject: it.msg.Subject, Header: it.msg.Header, Data: it.msg.Data}
		_, err = w.js.PublishMsg(ctx, m)
		cancel()
		if err == nil {
			w.c.Retried.Add(1)
			return
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
	w.drop(it.msg, err)
}

func (w *Writer) drop(m *nats.Msg, err error) {
	w.c.Dropped.Add(1)
	w.mu.Lock()
	now := time.Now()
	if now.Sub(w.lastLog) < time.Second {
		w.unlogged++
		w.mu.Unlock()
		return
	}
	more := w.unlogged
	w.lastLog, w.unlogged = now, 0
	w.mu.Unlock()
	ev := w.log.Warn().Err(err).Int("more_dropped", more)
	if m != nil {
		ev = ev.Str("subject", m.Subject).Str("msg_id", m.Header.Get(nats.MsgIdHdr))
	}
	ev.Msg("ledger record dropped (unless its message is redelivered, audits will report the event as lost)")
}

// Flush waits until every record written so far was acknowledged or
// retried, or ctx ends.
func (w *Writer) Flush(ctx context.Context) error {
	if w == nil {
		return nil
	}
	for {
		select {
		case <-w.js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
		done := w.idle
		w.mu.Unlock()
		if done == nil {
			if w.js.PublishAsyncPending() == 0 {
				return nil
			}
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
