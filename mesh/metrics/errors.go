package metrics

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// isNotFound reports a lane whose consumer or stream does not exist (the
// stage is not deployed), which is not a scrape failure.
func isNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}
