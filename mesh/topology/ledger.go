package topology

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The delivery ledger (mesh/ledger) keeps, per event, the steps of its
// life after it was accepted: enriched, delivered, parked. Subjects:
//
//	<prefix>.ledger.<step>.<type>.<key token>   one record per step
//	<prefix>.ledger.audit                        the last audit results
//
// The key token is the last token, as in every lane subject, so one filter
// reads one key's records (sluice audit --key, sluice trace).

// LedgerStream is the stream of delivery-ledger records.
func (n Names) LedgerStream() string { return n.c.StreamPrefix + "_LEDGER" }

// LedgerSubject is where the record of step for an event of type t and key
// token keyToken is published.
func (n Names) LedgerSubject(step, t, keyToken string) string {
	return n.c.Prefix + ".ledger." + step + "." + t + "." + keyToken
}

// LedgerFilter matches the records of step, type t and key token keyToken;
// an empty argument matches any.
func (n Names) LedgerFilter(step, t, keyToken string) string {
	return n.c.Prefix + ".ledger." + orAny(step) + "." + orAny(t) + "." + orAny(keyToken)
}

// LedgerAuditSubject is where `sluice audit` publishes the summary of each
// run; the status page shows the last one.
func (n Names) LedgerAuditSubject() string { return n.c.Prefix + ".ledger.audit" }

// EventsFilter matches the stored events of type t and key token keyToken
// in any partition (the partition of a known key is PartitionOf); an empty
// argument matches any.
func (n Names) EventsFilter(t, keyToken string) string {
	p := "*"
	if keyToken != "" {
		p = fmt.Sprint(PartitionOfToken(keyToken, n.c.Partitions))
	}
	return n.c.Prefix + ".events." + p + "." + orAny(t) + "." + orAny(keyToken)
}

// ParkedFilter matches the parked messages of type t and key token
// keyToken at any stage; an empty argument matches any.
func (n Names) ParkedFilter(t, keyToken string) string {
	return n.c.Prefix + ".parked.*." + orAny(t) + "." + orAny(keyToken)
}

// DispatchFilter matches the dispatch messages of type t and key token
// keyToken; an empty argument matches any.
func (n Names) DispatchFilter(t, keyToken string) string {
	p := "*"
	if keyToken != "" {
		p = fmt.Sprint(PartitionOfToken(keyToken, n.c.Partitions))
	}
	return n.c.Prefix + ".dispatch." + p + "." + orAny(t) + "." + orAny(keyToken)
}

func orAny(tok string) string {
	if tok == "" {
		return "*"
	}
	return tok
}

// LedgerStreamConfig is the config of the ledger stream. maxAge 0 keeps
// records as long as accepted events (topology.events_max_age): an audit
// needs both. maxBytes caps the stream (-1 or 0: unlimited); when full the
// oldest records go (DiscardOld), so a full ledger never holds a lane back.
func (n Names) LedgerStreamConfig(maxAge time.Duration, maxBytes int64) jetstream.StreamConfig {
	if maxAge == 0 {
		maxAge = n.c.EventsMaxAge
	}
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        n.LedgerStream(),
		Description: "Sluice delivery ledger (sluice audit, sluice trace)",
		Subjects:    []string{n.c.Prefix + ".ledger.>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      maxAge,
		MaxBytes:    maxBytes,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
		Duplicates:  n.c.DuplicateWindow,
	}
}
