package inbound

import "net/http"

// SplitBody runs a source envelope over a body, as the receiver does
// (tests and fuzzing).
func SplitBody(e *Envelope, body []byte, h http.Header, delivery, source string, maxItems int) ([]Item, error) {
	ce, err := compileEnvelope(e)
	if err != nil {
		return nil, err
	}
	return ce.Split(body, h, delivery, source, maxItems)
}

// ErrTooMany is errTooMany for tests.
var ErrTooMany = errTooMany
