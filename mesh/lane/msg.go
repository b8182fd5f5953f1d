package lane

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Msg is one message of a lane with what the runner knows about it.
type Msg struct {
	Subject string
	Data    []byte
	Header  nats.Header
	// Partition, Type and KeyToken come from the stored subject.
	Partition int
	Type      string
	KeyToken  string
	// StreamSeq is the message's sequence in its stream.
	StreamSeq uint64
	// NumDelivered counts deliveries by the server (1 on the first).
	NumDelivered uint64
	// Stored is when the stream stored the message.
	Stored time.Time
	// Failures counts this process's earlier unsuccessful attempts (retry or
	// pause) at this message; 0 on the first attempt.
	Failures int
	// InHand counts those of Failures the runner retried with the message
	// in hand (a short retry, inplace.go): attempts that were no new
	// delivery of the message. Failures+1-InHand is how many deliveries
	// of it this process ran (Redelivered).
	InHand int
	// FirstSeen is when this process first saw this message.
	FirstSeen time.Time

	raw jetstream.Msg
	l   *lane // nil for a Msg not made by a lane

	received   time.Time   // when this delivery reached the lane
	reconnects uint64      // the connection's reconnect count then
	pin        string      // the pin id it came with
	fenced     atomic.Bool // found at or below the lane's fence
}

// Fenced reports whether another replica of the service already applied
// m, so this one holds a late duplicate (it lost the lane while it held m)
// and must not apply it again. Call it right before an irreversible side
// effect, such as a CRM request, and return lane.Done() without the effect
// when it is true: the runner acks m and counts it in Stats.Fenced.
//
// It costs no round trip unless m is suspect (held longer than AckWait/3,
// or the connection dropped since it arrived); then it reads the fence
// from the bucket and may fail — treat an error as "cannot tell" and
// return a Retry. It cannot recall a side effect already under way: see
// fence.go for what the fence does and does not prevent.
func (m *Msg) Fenced(ctx context.Context) (bool, error) {
	if m.l == nil {
		return false, nil
	}
	return m.l.isFenced(ctx, m)
}

// Raw is the underlying JetStream message (for tests and diagnostics).
func (m *Msg) Raw() jetstream.Msg { return m.raw }

// Redelivered reports whether the server delivered m before this process's
// own deliveries of it: another process (or this one before a crash or a
// lane restart) had it and may have applied it. Retries in hand are
// attempts without a delivery.
func (m *Msg) Redelivered() bool {
	return DeliveredElsewhere(m.NumDelivered, m.Failures+1, m.InHand)
}

// DeliveredElsewhere reports whether a message the server delivered
// deliveries times was delivered more often than this process's attempts
// at it that were deliveries (attempts minus the retries in hand): the
// rule of Msg.Redelivered, for the ledger's records of those counts too.
func DeliveredElsewhere(deliveries uint64, attempts, inHand int) bool {
	return deliveries > uint64(attempts-inHand)
}

// Replayed reports whether m was replayed from the parked stream (a held
// key's round or an operator's replay): it carries a replay id.
func (m *Msg) Replayed() bool {
	return m.Header.Get(HeaderReplay) != ""
}
