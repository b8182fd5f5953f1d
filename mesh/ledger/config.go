package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"sluice.dev/mesh/topology"
)

// Config is the `ledger:` section of the configuration.
type Config struct {
	// Enabled turns the ledger on: the enricher and dispatcher write their
	// records, sluice audit and sluice trace read them. Default true.
	Enabled bool `yaml:"enabled"`
	// MaxAge is how long records are kept. 0: as long as accepted events
	// (topology.events_max_age); an audit needs both.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes caps the ledger stream; -1 or 0 is unlimited. When full the
	// oldest records are dropped (the pipeline is never held back by its
	// ledger); audits of that time then report events as lost.
	MaxBytes int64 `yaml:"max_bytes"`
	// SensitiveFields are JSON object keys whose values sluice trace,
	// sluice parked show, the status page and the stored bodies show as
	// "[redacted]", at any depth, matched whole without regard to case.
	// Secret-like keys (mesh/redact: names containing pass, pwd, secret,
	// token, auth, ...; api_key; ssn) are always redacted.
	SensitiveFields []string `yaml:"sensitive_fields"`
	// Enriched has the enricher write an enriched record per event too
	// (forward time and dispatch subject, from the enricher's side). It
	// doubles the records per event; without it the delivered and parked
	// records say when the request was stored and its sequence. Default
	// false.
	Enriched bool `yaml:"enriched"`
	// Bodies stores the CRM request body the mapping produced (redacted)
	// in each enriched record (it turns Enriched on), so trace can show it
	// after delivery. It adds about one body per event to the ledger.
	// Default false: trace shows the body only while the request is in the
	// dispatch or parked stream.
	Bodies bool `yaml:"bodies"`
	// MaxPending bounds the records published on one connection whose
	// PubAck has not come back; a lane waits (up to 5s) when it is reached.
	// Default 4096.
	MaxPending int `yaml:"max_pending"`
}

// DefaultConfig is the configuration with the ledger on.
func DefaultConfig() Config { return Config{Enabled: true}.WithDefaults() }

// WithDefaults returns c with zero fields set to their defaults (Enabled
// is not touched: start from DefaultConfig).
func (c Config) WithDefaults() Config {
	if c.MaxPending == 0 {
		c.MaxPending = 4096
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = -1
	}
	c.Enriched = c.Enriched || c.Bodies
	return c
}

// Validate reports every invalid field, named by its config key.
func (c Config) Validate() error {
	var errs []error
	if c.MaxAge < 0 || (c.MaxAge > 0 && c.MaxAge < time.Minute) {
		errs = append(errs, fmt.Errorf("ledger.max_age: %s must be 0 (as topology.events_max_age) or at least 1m", c.MaxAge))
	}
	if c.MaxBytes < -1 {
		errs = append(errs, fmt.Errorf("ledger.max_bytes: %d must be -1 (unlimited) or positive", c.MaxBytes))
	}
	if c.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("ledger.max_pending: %d must be at least 1", c.MaxPending))
	}
	for i, f := range c.SensitiveFields {
		if strings.TrimSpace(f) == "" {
			errs = append(errs, fmt.Errorf("ledger.sensitive_fields[%d]: empty", i))
		}
	}
	return errors.Join(errs...)
}

// Ensure creates or updates the ledger stream.
func Ensure(ctx context.Context, js topology.StreamManager, names topology.Names, c Config) error {
	c = c.WithDefaults()
	if err := names.EnsureStream(ctx, js, names.LedgerStreamConfig(c.MaxAge, c.MaxBytes)); err != nil {
		return fmt.Errorf("ensure stream %s: %w", names.LedgerStream(), err)
	}
	return nil
}

// idFields reads the event id of an envelope ("id") or a CRM request
// ("event_id") without checking anything else.
type idFields struct {
	ID      string `json:"id"`
	EventID string `json:"event_id"`
}

// EventID names the event a stored message is about, the same way for
// every stream: the event_id of a CRM request or the id of an envelope;
// for a message that is neither, its Nats-Msg-Id without the prefixes and
// suffixes that parking and replays add; else "<stream>:<seq>".
func EventID(data []byte, h nats.Header, stream string, seq uint64) string {
	var f idFields
	if json.Unmarshal(data, &f) == nil {
		if id := f.EventID; validID(id) {
			return id
		}
		if id := f.ID; validID(id) {
			return id
		}
	}
	if id := baseMsgID(h.Get(nats.MsgIdHdr)); id != "" {
		return id
	}
	return stream + ":" + strconv.FormatUint(seq, 10)
}

// baseMsgID strips "park:<stage>:" and ":replay:…" from a message id.
func baseMsgID(id string) string {
	if rest, ok := strings.CutPrefix(id, "park:"); ok {
		if _, after, ok := strings.Cut(rest, ":"); ok {
			id = after
		}
	}
	if i := strings.Index(id, ":replay:"); i >= 0 {
		id = id[:i]
	}
	return id
}

func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '!' || id[i] > '~' {
			return false
		}
	}
	return true
}
