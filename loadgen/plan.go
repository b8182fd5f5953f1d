// Package loadgen produces realistic marketplace events (customers signing
// up and changing details, cars listed, leads created and moving through
// their statuses, appointments booked) with a known per-key order, and
// publishes them into Sluice over JetStream or HTTP without breaking that
// order.
//
// Event ids are "<key>#<n>", n counting from 1 per key, so the CRM
// simulator's SelfCheck can verify order without the plan; Plan.Expected
// gives the full per-key lists for crmsim's Check.
package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"sluice.dev/mesh/envelope"
)

// Range is an inclusive range of database ids.
type Range struct {
	Min int `yaml:"min" json:"min"`
	Max int `yaml:"max" json:"max"`
}

// Len is the number of ids in the range.
func (r Range) Len() int { return r.Max - r.Min + 1 }

// PlanConfig configures NewPlan.
type PlanConfig struct {
	// Events is the number of events. Default 1000.
	Events int `yaml:"events"`
	// Keys is the number of distinct ordering keys (customers and cars).
	// Default: every id of the ranges the types need (90 with the sample
	// database). Must not exceed that.
	Keys int `yaml:"keys"`
	// Seed makes the plan reproducible: the same config gives the same
	// events, byte for byte. Default 0.
	Seed int64 `yaml:"seed"`
	// CustomerIDs, CarIDs and LeadIDs are the rows of the sample database
	// the events point to. Defaults 1..50, 1..40, 1..60.
	CustomerIDs Range `yaml:"customer_ids"`
	CarIDs      Range `yaml:"car_ids"`
	LeadIDs     Range `yaml:"lead_ids"`
	// Types restricts the event types; default all of AllTypes in a
	// realistic mix. When customer_signed_up is among them it is the first
	// event of every customer key (sign-up before any action).
	Types []string `yaml:"types"`
	// Simple produces only customer_updated (needs only the customers
	// lookup). It cannot be combined with Types.
	Simple bool `yaml:"simple"`
	// Start is the occurred_at of the first event; event i occurred at
	// Start + i*Spacing. Defaults 2026-01-05T09:00:00Z and 10ms.
	Start   time.Time     `yaml:"start"`
	Spacing time.Duration `yaml:"spacing"`
}

// DefaultStart is the default PlanConfig.Start.
var DefaultStart = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

// WithDefaults returns c with zero fields set to their defaults.
func (c PlanConfig) WithDefaults() PlanConfig {
	if c.Events == 0 {
		c.Events = 1000
	}
	if c.CustomerIDs == (Range{}) {
		c.CustomerIDs = Range{1, 50}
	}
	if c.CarIDs == (Range{}) {
		c.CarIDs = Range{1, 40}
	}
	if c.LeadIDs == (Range{}) {
		c.LeadIDs = Range{1, 60}
	}
	if len(c.Types) == 0 {
		if c.Simple {
			c.Types = []string{TypeCustomerUpdated}
		} else {
			c.Types = slices.Clone(AllTypes)
		}
	}
	if c.Keys == 0 {
		c.Keys = c.available()
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	if c.Spacing == 0 {
		c.Spacing = 10 * time.Millisecond
	}
	return c
}

func (c PlanConfig) has(t string) bool { return slices.Contains(c.Types, t) }

func (c PlanConfig) customerTypes() bool {
	return slices.ContainsFunc(c.Types, func(t string) bool { return t != TypeCarListed })
}

func (c PlanConfig) available() int {
	n := 0
	if c.customerTypes() {
		n += max(c.CustomerIDs.Len(), 0)
	}
	if c.has(TypeCarListed) {
		n += max(c.CarIDs.Len(), 0)
	}
	return n
}

// Validate reports every invalid field, named by its config key.
func (c PlanConfig) Validate() error {
	var errs []error
	if c.Events < 1 {
		errs = append(errs, fmt.Errorf("loadgen.events: %d must be >= 1", c.Events))
	}
	for name, r := range map[string]Range{"customer_ids": c.CustomerIDs, "car_ids": c.CarIDs, "lead_ids": c.LeadIDs} {
		if r.Min < 1 || r.Max < r.Min {
			errs = append(errs, fmt.Errorf("loadgen.%s: %d..%d must be a non-empty range of ids >= 1", name, r.Min, r.Max))
		}
	}
	if c.Simple && !slices.Equal(c.Types, []string{TypeCustomerUpdated}) {
		errs = append(errs, errors.New("loadgen.simple: cannot be combined with loadgen.types"))
	}
	seen := map[string]bool{}
	for i, t := range c.Types {
		if _, ok := defaultWeights[t]; !ok {
			errs = append(errs, fmt.Errorf("loadgen.types[%d]: unknown event type %q (want one of %s)", i, t,
				strings.Join(AllTypes, ", ")))
		}
		if seen[t] {
			errs = append(errs, fmt.Errorf("loadgen.types[%d]: %q listed twice", i, t))
		}
		seen[t] = true
	}
	if len(c.Types) == 0 {
		errs = append(errs, errors.New("loadgen.types: at least one type is required"))
	}
	kinds := 0
	if c.customerTypes() {
		kinds++
	}
	if c.has(TypeCarListed) {
		kinds++
	}
	if av := c.available(); c.Keys > av || c.Keys < kinds {
		errs = append(errs, fmt.Errorf("loadgen.keys: %d must be between %d and %d (the customer and car ids "+
			"of loadgen.customer_ids and loadgen.car_ids the types need)", c.Keys, kinds, av))
	}
	if c.Spacing < 0 {
		errs = append(errs, fmt.Errorf("loadgen.spacing: %s must be >= 0", c.Spacing))
	}
	return errors.Join(errs...)
}

// Plan is a generated, ordered list of events.
type Plan struct {
	// Events in production order. Publishers keep this order per key.
	Events   []*envelope.Envelope
	cfg      PlanConfig
	expected map[string][]string
	keys     []string
}

// NewPlan generates the events of cfg (after defaults).
func NewPlan(cfg PlanConfig) (*Plan, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := newGen(cfg)
	p := &Plan{Events: make([]*envelope.Envelope, 0, cfg.Events), cfg: cfg, expected: map[string][]string{}}
	for i := range cfg.Events {
		ev, err := g.next(cfg.Start.Add(time.Duration(i) * cfg.Spacing))
		if err != nil {
			return nil, err
		}
		if _, seen := p.expected[ev.Key]; !seen {
			p.keys = append(p.keys, ev.Key)
		}
		p.expected[ev.Key] = append(p.expected[ev.Key], ev.ID)
		p.Events = append(p.Events, ev)
	}
	return p, nil
}

// Config is the config the plan was made from (after defaults).
func (p *Plan) Config() PlanConfig { return p.cfg }

// Expected returns, per key, the event ids in production order (a copy).
func (p *Plan) Expected() map[string][]string {
	out := make(map[string][]string, len(p.expected))
	for k, ids := range p.expected {
		out[k] = slices.Clone(ids)
	}
	return out
}

// Keys returns the keys that have events, in order of their first event.
func (p *Plan) Keys() []string { return slices.Clone(p.keys) }

// CountByType returns the number of events of each type.
func (p *Plan) CountByType() map[string]int {
	out := map[string]int{}
	for _, e := range p.Events {
		out[e.Type]++
	}
	return out
}

// WriteNDJSON writes the events, one JSON envelope per line.
func (p *Plan) WriteNDJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, e := range p.Events {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}
