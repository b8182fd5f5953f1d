package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
)

// Resend policy of a record whose PubAck failed (Pending.Wait).
const (
	resendAttempts = 3
	resendTimeout  = 2 * time.Second
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
	// timeout, disconnect, or not sent at all); Pending.Wait sends them
	// again.
	Failed atomic.Uint64
	// Retried counts records stored by a resend.
	Retried atomic.Uint64
	// Unstored counts records Pending.Wait gave up on: the message they are
	// about was not acked (the lane holds and redelivers it, and the
	// record is written again), so no audit misses them.
	Unstored atomic.Uint64
}

// Writer publishes ledger records asynchronously; Pending.Wait makes one
// durable before the message it is about is acked. Use one per NATS
// connection, the one whose lanes ack the messages the records are about
// (see the package doc). A nil *Writer writes nothing. Close ends it.
type Writer struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	names topology.Names
	cfg   WriterConfig
	red   *Redactor
	c     *Counters
	log   zerolog.Logger

	closeOnce sync.Once
	closed    chan struct{} // closed by Close

	mu       sync.Mutex
	lastLog  time.Time // of a failure; failures are logged at most once a second
	unlogged int
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
		log: cfg.Logger.With().Str("component", "ledger").Logger(), closed: make(chan struct{})}
	if w.c == nil {
		w.c = &Counters{}
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(publishTimeout),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { w.c.Failed.Add(1) }))
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

// Pending is a record on its way to the server; Wait makes sure it is
// stored. The zero Pending (a nil Writer's, or a step not written) is
// stored already.
type Pending struct {
	w   *Writer
	m   *nats.Msg
	fut jetstream.PubAckFuture
	err error // set when the publish was not sent at all
}

// Write publishes r without waiting for the server; call Wait on the
// result before acking the message r is about (lane.Outcome.Durable, the
// lane's BeforeAck hook), so that the PubAck's round trip overlaps the
// lane's own work. Write blocks only when MaxPending records are awaiting
// their PubAck (for up to 5s). A record nobody waits for (history, such as
// an attempt record) is not sent again when its PubAck fails; Failed
// counts it.
func (w *Writer) Write(r Record) Pending {
	if !w.Wants(r.Step) {
		return Pending{}
	}
	if !w.cfg.Bodies {
		r.Body = nil
	} else if len(r.Body) > 0 {
		r.Body = w.red.JSON(r.Body)
	}
	if c := r.CRM; c != nil && c.Response != "" {
		cc := *c // the CRM's answer may carry the same personal data as the body
		cc.Response = w.red.Body([]byte(c.Response))
		r.CRM = &cc
	}
	// Park reasons and errors may quote a CRM's answer or a jq error.
	r.Reason, r.Error = w.red.Text(r.Reason), w.red.Text(r.Error)
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
	p := Pending{w: w, m: m}
	select {
	case <-w.closed:
		p.err = ErrWriterClosed
		return p
	default:
	}
	if p.fut, p.err = w.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait)); p.err != nil {
		w.c.Failed.Add(1)
	}
	return p
}

// Wait returns nil once the server stored the record. A record whose
// publish failed (no PubAck, timeout, not sent) is sent again, a few
// times, under ctx; an error means it is not known to be stored: the
// caller must not ack the message the record is about (it redelivers it,
// and the record is written again; readers keep one copy per Record.ID).
func (p Pending) Wait(ctx context.Context) error {
	if p.w == nil {
		return nil
	}
	err := p.err
	if p.fut != nil {
		select {
		case <-p.fut.Ok():
			return nil
		case err = <-p.fut.Err():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.w.resend(ctx, p.m, err)
}

// resendBackoff is the wait between resends of one record.
var resendBackoff = retry.Policy{Delay: 50 * time.Millisecond, Max: time.Second}

// resend publishes m again and waits for its PubAck; a repeat of a record
// the server did store is skipped by readers (Record.ID). It gives up
// after resendAttempts, when ctx ends or when the Writer is closed.
func (w *Writer) resend(ctx context.Context, m *nats.Msg, err error) error {
	for attempt := range resendAttempts {
		if errors.Is(err, ErrWriterClosed) || w.nc.IsClosed() {
			break
		}
		if attempt > 0 {
			// 50ms, 200ms, 800ms, 1s: quadrupling is two doublings.
			t := time.NewTimer(resendBackoff.Backoff(2 * (attempt - 1)))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				err = ctx.Err()
				continue
			case <-w.closed:
				t.Stop()
				err = ErrWriterClosed
				continue
			}
		}
		rctx, cancel := context.WithTimeout(ctx, resendTimeout)
		_, err = w.js.PublishMsg(rctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
		cancel()
		if err == nil {
			w.c.Retried.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	w.unstored(m, err)
	return fmt.Errorf("ledger record %s: %w", m.Subject, err)
}

func (w *Writer) unstored(m *nats.Msg, err error) {
	w.c.Unstored.Add(1)
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
	w.log.Warn().Err(err).Int("more_unstored", more).Str("subject", m.Subject).
		Msg("ledger record not stored; its message is not acked and will be redelivered")
}

// Flush waits until every record written so far was acknowledged (or
// failed), or ctx ends.
func (w *Writer) Flush(ctx context.Context) error {
	if w == nil {
		return nil
	}
	for w.js.PublishAsyncPending() > 0 {
		select {
		case <-w.js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close flushes the records written so far (until ctx ends) and ends the
// Writer: later Writes are not sent (their Wait fails with
// ErrWriterClosed) and a Wait that is resending gives up at once. The
// connection is the caller's; it stays open. Close is idempotent.
func (w *Writer) Close(ctx context.Context) error {
	if w == nil {
		return nil
	}
	err := w.Flush(ctx)
	w.closeOnce.Do(func() { close(w.closed) })
	return err
}
