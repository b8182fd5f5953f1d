package dispatcher

import (
	"errors"
	"strconv"
	"time"

	"sluice.dev/mesh/service"
)

var (
	// ErrUndecodable means a dispatch message is not a valid crmreq.Request
	// (bad JSON, unknown fields, missing event id, bad key, mode, method or
	// path). The handler parks it with reason "undecodable request"; nothing
	// was sent to the CRM.
	ErrUndecodable = errors.New("dispatcher: undecodable request")
	// ErrCRMStatus is matched by every *StatusError: the CRM answered with
	// a status other than 2xx. The handler retries and pauses the outlet,
	// or parks the event when the status policy says "park".
	ErrCRMStatus = errors.New("dispatcher: crm answered with an error status")
	// ErrCRMUnreachable means no answer came: connection refused or reset,
	// DNS failure, TLS error or timeout. The handler retries and pauses the
	// outlet; it never parks for it.
	ErrCRMUnreachable = errors.New("dispatcher: crm unreachable")
	// ErrNoCRMID means an update found no CRM id for its entity: its create
	// was parked or never sent. The handler parks the update.
	ErrNoCRMID = errors.New("dispatcher: no crm id known")
	// ErrNoIDInResponse means a create got a 2xx whose body did not yield a
	// CRM id through id_from. The handler parks the create with the CRM's
	// response (fix id_from, then replay it; the Idempotency-Key lets the
	// CRM answer the replay without creating a second record).
	ErrNoIDInResponse = errors.New("dispatcher: no crm id in the create response")
	// ErrIDStore means the CRM id KV bucket could not be read or written.
	// The handler retries; a create the CRM already accepted is not sent
	// again by this process, only its id is stored.
	ErrIDStore = errors.New("dispatcher: crm id store failed")
	// ErrBucketMissing is returned by Start when the CRM id bucket does not
	// exist. The caller runs topology.Names.Ensure first.
	ErrBucketMissing = errors.New("dispatcher: crm id bucket missing")
	// ErrDispatchBacklog means an inline outlet (Config.Inline) found
	// requests of its partition still in the dispatch stream, or keys of
	// it held or parked at the dispatcher, from before the switch. The
	// enricher lane retries until the dispatcher has sent them (or an
	// operator replayed or discarded the parked keys), so that no event
	// overtakes an older one of its key.
	ErrDispatchBacklog = errors.New("dispatcher: requests from before dispatcher.inline are still waiting")
	// ErrNotStarted is returned by Restart on a service that is not
	// running: the caller starts it first.
	ErrNotStarted = service.ErrNotStarted
)

// StatusError is a CRM answer with a status other than 2xx.
type StatusError struct {
	// Status is the HTTP status code.
	Status int
	// RetryAfter is the parsed Retry-After header, 0 when absent.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return "crm answered " + strconv.Itoa(e.Status)
}

// Is makes errors.Is(err, ErrCRMStatus) match.
func (e *StatusError) Is(target error) bool { return target == ErrCRMStatus }
