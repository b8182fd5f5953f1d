package topology

import (
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// ImportsBucket is the KV bucket of rows `sluice import` stored:
// "<stream_prefix lower>_imports".
func (n Names) ImportsBucket() string {
	return strings.ToLower(n.c.StreamPrefix) + "_imports"
}

// ImportsConfig is the config of the imports bucket: one entry per
// imported row, "<file>.<row id>" -> when it was stored, kept as long as
// accepted events (topology.events_max_age). `sluice import` creates it on
// first use.
func (n Names) ImportsConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      n.ImportsBucket(),
		Description: "Sluice import ledger: <file hash>.<row id> -> RFC 3339 time the row's event was stored",
		TTL:         n.c.EventsMaxAge,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
	}
}
