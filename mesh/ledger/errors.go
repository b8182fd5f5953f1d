package ledger

import "errors"

var (
	// ErrNoLedger means the ledger stream does not exist: ledger.enabled is
	// off, or no service with it on has started yet. The caller turns it on
	// (or runs `sluice run` once) before auditing.
	ErrNoLedger = errors.New("ledger: no ledger stream")
	// ErrBadRange means the audit's until is before its since. The caller
	// fixes the flags.
	ErrBadRange = errors.New("ledger: bad time range")
	// ErrFindings is returned by the command line when an audit found a
	// lost event or a reordered key (exit status 3). Nothing is wrong with
	// the audit itself: the report says what it found.
	ErrFindings = errors.New("ledger: audit found lost or reordered events")
	// ErrEventNotFound means trace found no accepted event and no ledger
	// record with that id (in the range it looked at). The caller checks
	// the id, or passes --key to look in that key only.
	ErrEventNotFound = errors.New("ledger: event not found")
	// ErrWrongConn means a service was given a Writer on another NATS
	// connection than its lanes': a record could then reach the server
	// after the ack it must precede. The caller builds the Writer on the
	// service's own connection (Deps.JS.Conn()).
	ErrWrongConn = errors.New("ledger: the writer must publish on the lanes' connection")
	// ErrWriterClosed means a record was written after its Writer was
	// closed (the service is stopping): it was not sent. The lane does not
	// ack the message, so it is redelivered to the next process.
	ErrWriterClosed = errors.New("ledger: writer closed")
)
