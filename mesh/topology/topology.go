// Package topology names and creates every JetStream stream, subject and
// consumer Sluice uses. It is the one place that knows the shape of the mesh:
// services ask it for subjects and consumer configs instead of formatting
// strings themselves.
//
// Subjects (prefix "sluice" by default):
//
//	<prefix>.events.<type>.<key>          producers publish here (JetStream, acked)
//	<prefix>.events.<P>.<type>.<key>      stored subject after the partition transform
//	<prefix>.dispatch.<P>.<type>.<key>    enricher output, CRM-ready requests
//	<prefix>.parked.<stage>.<type>.<key>  events a stage gave up on, with the reason
//	<prefix>.alerts.<kind>                alert events (outlet paused, ...)
package topology

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config describes the stream topology. The zero value is not usable: call
// WithDefaults.
type Config struct {
	// Prefix is the first subject token of every Sluice subject. Default "sluice".
	Prefix string `yaml:"prefix"`
	// StreamPrefix prefixes every stream name. Default "SLUICE".
	StreamPrefix string `yaml:"stream_prefix"`
	// Partitions is the number of ordered lanes per stage. Keys are spread over
	// partitions by FNV-1a; N=1 gives one strict global order. Default 16.
	// Changing it on an existing stream is refused (see docs/runbook.md).
	Partitions int `yaml:"partitions"`
	// Replicas is the stream replica count: 1 embedded, 3 in a cluster. Default 1.
	Replicas int `yaml:"replicas"`
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values for
	// dedupe. Default 2m.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// EventsMaxAge is how long accepted events are kept in the events stream
	// (history for replay and audit). Default 168h. Set it well above the
	// longest outage you expect: an event older than this is removed even if
	// the enricher has not consumed it yet.
	EventsMaxAge time.Duration `yaml:"events_max_age"`
	// MaxBytes caps each of the events and dispatch streams; -1 is unlimited.
	// When full, new publishes are refused (DiscardNew): producers get an
	// error, nothing accepted is dropped. Default -1.
	MaxBytes int64 `yaml:"max_bytes"`
	// AckWait is how long a lane may hold a message before the server
	// redelivers it. Must exceed the slowest handler; lanes send InProgress
	// every AckWait/3. It is also the recovery time after a process is killed
	// mid-message. Default 30s.
	AckWait time.Duration `yaml:"ack_wait"`
	// PinnedTTL is how long a lane consumer stays pinned to the replica
	// that pulls from it after that replica stops pulling (killed, cut off,
	// frozen): only then may another replica of the service take the lane
	// over (see docs/scaling.md). A lane pulls at least every PinnedTTL/3,
	// so a replica loses its lanes only after missing about three pulls. A
	// lane with a message in flight fails over after the longer of
	// PinnedTTL and AckWait (the message must time out first); an idle lane
	// after PinnedTTL. Shorter: faster failover of idle lanes, more false
	// failovers on a long GC pause or network blip. Default: half of
	// AckWait (15s). At least 3s: a pull request lives at least 1s and the
	// pin must outlast three of them (with 2s, one late pull on a loaded
	// machine lost the pin and re-pinned the same replica).
	PinnedTTL time.Duration `yaml:"pinned_ttl"`
	// BalanceReplicas spreads a stage's lanes over its live service
	// replicas (about N/k lanes each with k replicas) instead of leaving the
	// first replica to pull pinned to every lane and the others idle. Each
	// lane group heartbeats into the members bucket (MembersBucket); pinning
	// and the lane fence still guarantee one worker per lane at a time. See
	// docs/scaling.md. Default false: every replica pulls every lane.
	BalanceReplicas bool `yaml:"balance_replicas"`
	// Memory stores streams in memory instead of files (tests only).
	Memory bool `yaml:"memory"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "sluice"
	}
	if c.StreamPrefix == "" {
		c.StreamPrefix = "SLUICE"
	}
	if c.Partitions == 0 {
		c.Partitions = 16
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.EventsMaxAge == 0 {
		c.EventsMaxAge = 7 * 24 * time.Hour
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = -1
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.PinnedTTL == 0 {
		c.PinnedTTL = max(c.AckWait/2, 3*time.Second)
	}
	return c
}

// Validate reports the first invalid field, named by its config key.
func (c Config) Validate() error {
	var errs []error
	if !validToken(c.Prefix) {
		errs = append(errs, fmt.Errorf("topology.prefix: %q is not a single subject token", c.Prefix))
	}
	if !validToken(c.StreamPrefix) {
		errs = append(errs, fmt.Errorf("topology.stream_prefix: %q is not a valid stream name", c.StreamPrefix))
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, fmt.Errorf("topology.partitions: %d is out of range 1..1024", c.Partitions))
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		errs = append(errs, fmt.Errorf("topology.replicas: %d must be 1, 3 or 5", c.Replicas))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("topology.ack_wait: %s must be at least 1s", c.AckWait))
	}
	if c.PinnedTTL < 3*time.Second {
		errs = append(errs, fmt.Errorf("topology.pinned_ttl: %s must be at least 3s (three pulls of at least 1s)", c.PinnedTTL))
	}
	if c.DuplicateWindow < time.Second {
		errs = append(errs, fmt.Errorf("topology.duplicate_window: %s must be at least 1s", c.DuplicateWindow))
	}
	return errors.Join(errs...)
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == '.' || r == '*' || r == '>' || r > 126 {
			return false
		}
	}
	return true
}

// Names of streams and subjects derived from a Config.
type Names struct{ c Config }

// New returns the names for c (after defaults).
func New(c Config) Names { return Names{c: c.WithDefaults()} }

// Config returns the topology config these names were made from.
func (n Names) Config() Config { return n.c }

// Partitions is the partition count.
func (n Names) Partitions() int { return n.c.Partitions }

// EventsStream is the stream of accepted events.
func (n Names) EventsStream() string { return n.c.StreamPrefix + "_EVENTS" }

// DispatchStream is the stream of CRM-ready requests.
func (n Names) DispatchStream() string { return n.c.StreamPrefix + "_DISPATCH" }

// ParkedStream is the stream of parked events.
func (n Names) ParkedStream() string { return n.c.StreamPrefix + "_PARKED" }

// AlertsStream is the stream of alert events.
func (n Names) AlertsStream() string { return n.c.StreamPrefix + "_ALERTS" }

// AuditStream is the stream of operator actions.
func (n Names) AuditStream() string { return n.c.StreamPrefix + "_AUDIT" }

// CRMIDBucket is the KV bucket mapping entity keys to CRM record ids.
func (n Names) CRMIDBucket() string { return strings.ToLower(n.c.StreamPrefix) + "_crm_ids" }

// EventSubject is where a producer publishes an event of type t and key key.
// The key is escaped with KeyToken.
func (n Names) EventSubject(t, key string) string {
	return n.c.Prefix + ".events." + t + "." + KeyToken(key)
}

// EventsIngestFilter matches every subject producers publish to.
func (n Names) EventsIngestFilter() string { return n.c.Prefix + ".events.*.*" }

// EventsPartitionFilter matches the stored events of partition p.
func (n Names) EventsPartitionFilter(p int) string {
	return n.c.Prefix + ".events." + strconv.Itoa(p) + ".>"
}

// EventsTransformDest is the stream subject transform destination that
// inserts the partition token. The partition is FNV-1a of the key token mod N.
func (n Names) EventsTransformDest() string {
	return fmt.Sprintf("%s.events.{{partition(%d,2)}}.{{wildcard(1)}}.{{wildcard(2)}}", n.c.Prefix, n.c.Partitions)
}

// DispatchSubject is where the enricher publishes the request for an event.
func (n Names) DispatchSubject(p int, t, keyToken string) string {
	return n.c.Prefix + ".dispatch." + strconv.Itoa(p) + "." + t + "." + keyToken
}

// DispatchPartitionFilter matches partition p of the dispatch stream.
func (n Names) DispatchPartitionFilter(p int) string {
	return n.c.Prefix + ".dispatch." + strconv.Itoa(p) + ".>"
}

// ParkedSubject is where stage parks an event of type t and key token k.
func (n Names) ParkedSubject(stage Stage, t, keyToken string) string {
	return n.c.Prefix + ".parked." + string(stage) + "." + t + "." + keyToken
}

// AlertSubject is where alerts of a kind are published.
func (n Names) AlertSubject(kind string) string { return n.c.Prefix + ".alerts." + kind }

// ControlSubject is the request subject a service listens on for control
// commands (lane restarts) from the watchdog or the CLI.
func (n Names) ControlSubject(service string) string {
	return n.c.Prefix + ".control." + service
}

// ConsumerName is the durable consumer of stage for partition p.
func (n Names) ConsumerName(stage Stage, p int) string {
	return fmt.Sprintf("%s-%03d", stage, p)
}

// SubjectParts splits a stored lane subject into partition, type and key
// token. It accepts both events and dispatch subjects. A partition at or
// above today's count is not an error: it is history stored before the
// count was lowered (sluice replay and the ledger read it).
func (n Names) SubjectParts(subject string) (partition int, typ, keyToken string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 5 || parts[0] != n.c.Prefix {
		return 0, "", "", fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	p, err := strconv.Atoi(parts[2])
	if err != nil || p < 0 {
		return 0, "", "", fmt.Errorf("%w: partition token of %q", ErrBadSubject, subject)
	}
	return p, parts[3], parts[4], nil
}

// PartitionOf returns the partition the server assigns to key: FNV-1a 32 of
// the key token, mod N, as the {{partition}} transform computes it.
func (n Names) PartitionOf(key string) int {
	return PartitionOfToken(KeyToken(key), n.c.Partitions)
}

// PartitionOfToken is PartitionOf for an already escaped key token.
func PartitionOfToken(token string, partitions int) int {
	const offset, prime = uint32(2166136261), uint32(16777619)
	h := offset
	for i := 0; i < len(token); i++ {
		h ^= uint32(token[i])
		h *= prime
	}
	return int(h % uint32(partitions))
}
