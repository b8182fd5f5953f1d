package service

import "errors"

var (
	// ErrStarted is returned by Start on a running service. The caller has
	// a bug: Stop it first.
	ErrStarted = errors.New("service: already started")
	// ErrNotStarted is returned by Restart before Start (or after Stop):
	// the caller starts the service first. Stop never returns it: stopping
	// a stopped service does nothing.
	ErrNotStarted = errors.New("service: not started")
)
