package crmsim

import "errors"

var (
	// ErrStarted means Start was called on a sim that is already serving.
	// The caller has a lifecycle bug: start each Sim once.
	ErrStarted = errors.New("crmsim: already started")
	// ErrNotStarted means URL or Stop was used before Start. Start the sim
	// first, or serve Handler() yourself (httptest.NewServer).
	ErrNotStarted = errors.New("crmsim: not started")
	// ErrBadControl means a control request (/_sim/...) had a malformed or
	// out-of-range body or parameter; the sim answered 400 and changed
	// nothing. The caller fixes the request.
	ErrBadControl = errors.New("crmsim: bad control request")
	// ErrControl means the control API answered with an unexpected status
	// (Client only); the error text carries the status and body.
	ErrControl = errors.New("crmsim: control request failed")
)
