package lane

import (
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
	// FirstSeen is when this process first saw this message.
	FirstSeen time.Time

	raw jetstream.Msg
}

// Raw is the underlying JetStream message (for tests and diagnostics).
func (m *Msg) Raw() jetstream.Msg { return m.raw }
