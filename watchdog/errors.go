package watchdog

import "errors"

var (
	// ErrNotStarted is returned by Stop on a watchdog or Supervisor that is
	// not running. The caller ignores it on shutdown paths.
	ErrNotStarted = errors.New("watchdog: not started")
	// ErrAlreadyStarted is returned by Start on a running watchdog or
	// Supervisor. The caller has a wiring bug: Start once, Stop once.
	ErrAlreadyStarted = errors.New("watchdog: already started")
	// ErrNotOwner is returned by a ServeControl restart function when this
	// process does not run the partition. ServeControl then stays silent so
	// that the instance owning the partition answers.
	ErrNotOwner = errors.New("watchdog: partition not run by this process")
	// ErrBadControlRequest means a control request is not valid JSON of the
	// documented shape. The service replies with the error; the sender fixes
	// its request.
	ErrBadControlRequest = errors.New("watchdog: bad control request")
	// ErrUnknownAction means a control request names an action this
	// version does not know. The sender checks the service's version.
	ErrUnknownAction = errors.New("watchdog: unknown control action")
	// ErrNoOwner means a restart request got no answer: no running instance
	// owns the lane. The watchdog alerts; the operator starts the service.
	ErrNoOwner = errors.New("watchdog: no service instance answered the control request")
	// ErrControlFailed means the owning service answered a control request
	// with an error; it is wrapped with the service's message.
	ErrControlFailed = errors.New("watchdog: control request failed")
	// ErrBadAdvisory means an advisory message is not JetStream advisory
	// JSON. The watchdog counts and skips it.
	ErrBadAdvisory = errors.New("watchdog: bad advisory")
)
