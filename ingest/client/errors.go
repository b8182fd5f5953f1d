package client

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"sluice.dev/mesh/envelope"
)

var (
	// ErrInvalid: the event (or one event of a batch) is malformed, found
	// either by the local check or by the server (HTTP 400). Nothing of the
	// request was stored and it is never retried: fix the event. errors.As
	// an *InvalidError for the field list.
	ErrInvalid = errors.New("client: invalid event")
	// ErrUnavailable: the server could not be reached or refused for a
	// transient reason (503, no JetStream ack) until the retry budget or the
	// context ran out. The event may or may not be stored: publish it again
	// later with the SAME id, the server drops the duplicate.
	ErrUnavailable = errors.New("client: service unavailable")
	// ErrRejected: the server refused the request for a reason retrying
	// does not fix (HTTP 401, 413, 415, other 4xx). Fix the configuration
	// (token, batch size) before sending again.
	ErrRejected = errors.New("client: request rejected")
)

// FieldError is one problem with one event: which event of the request
// (Index, from 0; ID when known), which field and why.
type FieldError struct {
	Index int    `json:"index"`
	ID    string `json:"id,omitempty"`
	envelope.FieldError
}

// InvalidError carries every field problem of a rejected request. It
// matches errors.Is(err, ErrInvalid) and errors.Is(err, envelope.ErrInvalid).
type InvalidError struct {
	Fields []FieldError
}

func (e *InvalidError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalid.Error())
	b.WriteString(":")
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " event %d", f.Index)
		if f.ID != "" {
			fmt.Fprintf(&b, " (%s)", f.ID)
		}
		fmt.Fprintf(&b, " %s", f.FieldError.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is match ErrInvalid and envelope.ErrInvalid.
func (e *InvalidError) Unwrap() []error { return []error{ErrInvalid, envelope.ErrInvalid} }

// UnavailableError is returned when the client gave up: how many attempts
// were made, the last transport error and, when the context ended, its
// error. It matches errors.Is(err, ErrUnavailable), the last error and the
// context's error (context.DeadlineExceeded, context.Canceled).
type UnavailableError struct {
	Attempts int
	Last     error
	Ctx      error
}

func (e *UnavailableError) Error() string {
	s := fmt.Sprintf("%s: gave up after %d attempts", ErrUnavailable, e.Attempts)
	if e.Ctx != nil {
		s += " (" + e.Ctx.Error() + ")"
	}
	if e.Last != nil {
		s += ": " + e.Last.Error()
	}
	return s
}

// Unwrap lets errors.Is match ErrUnavailable, the last error and ctx's.
func (e *UnavailableError) Unwrap() []error {
	errs := []error{ErrUnavailable}
	if e.Last != nil {
		errs = append(errs, e.Last)
	}
	if e.Ctx != nil {
		errs = append(errs, e.Ctx)
	}
	return errs
}

// retryAfterError is a transient transport error with the server's hint of
// when to try again (HTTP Retry-After).
type retryAfterError struct {
	after time.Duration
	err   error
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }
