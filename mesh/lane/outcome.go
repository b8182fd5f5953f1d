// Package lane runs ordered lanes: one durable JetStream pull consumer per
// partition with MaxAckPending=1, and one goroutine per lane calling a
// Handler for each message. The Handler only says what happened (an
// Outcome); the runner alone decides ack, nak-with-delay, pause or park, so
// every stage treats the bus the same way.
package lane

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"sluice.dev/mesh/redact"
)

// Handler processes one message of a lane. It must not ack or nak the
// message itself: it returns an Outcome.
type Handler func(ctx context.Context, m *Msg) Outcome

// Middleware wraps a Handler (logging, metrics, validation).
type Middleware func(Handler) Handler

// Chain applies middlewares so that the first one is outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Kind is what the runner does with a message.
type Kind int

// The outcome kinds.
const (
	// KindDone acks the message.
	KindDone Kind = iota
	// KindForward publishes the outputs (each acked by JetStream) and only
	// then acks the message.
	KindForward
	// KindRetry naks the message with a delay; the lane holds until it is
	// redelivered and succeeds.
	KindRetry
	// KindPause pauses the lane's consumer on the server for a while and naks
	// the message; it stays at the head and nothing is skipped.
	KindPause
	// KindPark publishes the message to the parked stream with the reason and
	// acks it, so the lane goes on.
	KindPark
	// KindHold is the runner's own (Config.StepAside, hold.go): a retry or
	// pause the handler asked for became a hold of the message's key; the
	// message is parked aside, acked, and replayed by the runner later.
	KindHold
)

func (k Kind) String() string {
	switch k {
	case KindDone:
		return "done"
	case KindForward:
		return "forward"
	case KindRetry:
		return "retry"
	case KindPause:
		return "pause"
	case KindPark:
		return "park"
	case KindHold:
		return "hold"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Outcome is a Handler's verdict on a message.
type Outcome struct {
	Kind Kind
	// Delay is the nak delay (KindRetry) or the pause length (KindPause).
	Delay time.Duration
	// Reason is a short operator-facing reason (KindPark, also logged for
	// retries and pauses).
	Reason string
	// Err is the underlying error, if any.
	Err error
	// Out are the messages to publish before acking (KindForward). Each
	// should carry a Nats-Msg-Id header so a redelivery is deduplicated.
	Out []*nats.Msg
	// Header is added to the parked message (KindPark), e.g. the CRM's
	// response.
	Header nats.Header
	// KeyOpen (KindPark, with Config.IsolateKeys) parks this message only:
	// its key is not isolated, so the key's later messages reach the
	// handler (skip-and-park). A replayed message parked with KeyOpen
	// still sends its key back to parked (the replay's order holds).
	KeyOpen bool
	// Durable, if set, is called by the runner just before it acks the
	// message (KindDone, KindForward, KindPark), after the outputs or the
	// parked copy are stored: a handler that published a record
	// asynchronously waits for its PubAck here, so that wait overlaps the
	// runner's own publishes. An error holds the lane like a failed
	// publish (nak after Config.PublishRetry): the message is redelivered
	// and the handler runs again.
	Durable func(ctx context.Context) error
	// StepAside (KindRetry, KindPause) says the failure may be the
	// message's own rather than its dependency's (a 5xx for one request):
	// with Config.StepAside the runner may hold the message's key for a
	// retry and let the partition's other keys go on (hold.go).
	StepAside bool
	// Probe (KindPause), if set, is tried while the lane is paused, every
	// ProbeEvery; the first success resumes the lane at once instead of
	// waiting out the pause. It must be safe to repeat (e.g. the failed
	// request again, with its idempotency key).
	Probe func(ctx context.Context) error
}

// Transient marks o (a Retry or a Pause) as a failure that may be the
// message's own, so the runner may step its key aside (Outcome.StepAside).
func (o Outcome) Transient() Outcome {
	o.StepAside = true
	return o
}

// WithProbe sets the probe of a Pause (Outcome.Probe).
func (o Outcome) WithProbe(probe func(ctx context.Context) error) Outcome {
	o.Probe = probe
	return o
}

// Done acks the message.
func Done() Outcome { return Outcome{Kind: KindDone} }

// Forward publishes out, waits for JetStream's acks, then acks the message.
func Forward(out ...*nats.Msg) Outcome { return Outcome{Kind: KindForward, Out: out} }

// Retry naks the message with delay after; the lane holds.
func Retry(after time.Duration, err error) Outcome {
	return Outcome{Kind: KindRetry, Delay: after, Err: err, Reason: errString(err)}
}

// Pause pauses the lane's consumer for d and leaves the message at the head.
func Pause(d time.Duration, err error) Outcome {
	return Outcome{Kind: KindPause, Delay: d, Err: err, Reason: errString(err)}
}

// Park moves the message to the parked stream with reason and acks it.
func Park(reason string, err error, h nats.Header) Outcome {
	return Outcome{Kind: KindPark, Reason: reason, Err: err, Header: h}
}

// ParkOpen parks the message like Park but leaves its key open: with
// IsolateKeys the key's later messages are not parked behind it.
func ParkOpen(reason string, err error, h nats.Header) Outcome {
	return Outcome{Kind: KindPark, Reason: reason, Err: err, Header: h, KeyOpen: true}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// redactOutcome hides sensitive values (mesh/redact's built-in rules and
// e-mail addresses) in o's reason and error text, which a handler may have
// built from a CRM's answer or a jq error. The error still wraps the
// original for errors.Is.
func redactOutcome(o Outcome) Outcome {
	o.Reason = redact.Default.Text(o.Reason)
	if o.Err != nil {
		if t := redact.Default.Text(o.Err.Error()); t != o.Err.Error() {
			o.Err = redactedError{text: t, err: o.Err}
		}
	}
	return o
}

// redactedError is an error whose text had values hidden.
type redactedError struct {
	text string
	err  error
}

func (e redactedError) Error() string { return e.text }
func (e redactedError) Unwrap() error { return e.err }
