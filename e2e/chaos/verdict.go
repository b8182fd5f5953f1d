package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"

	"sluice.dev/crmsim"
	"sluice.dev/mesh/ledger"
)

// verdict is what the suite found.
type verdict struct {
	crm crmsim.Report
	// Attempts and injected errors at the CRM.
	attempts, injected int
	// From the CRM's records: events answered 2xx more than once, and those
	// whose 2xx answers carried different Idempotency-Keys (or none).
	dupEvents    int
	dupMixedKeys []string
	// holes are undelivered events with a later event of their key
	// delivered: lost (or parked), never just "not yet"; the other
	// undelivered events are a key's tail still in the pipeline.
	holes    []string
	audit    ledger.Report
	auditErr error
}

// ok: 0 lost and 0 reordered from both sides, duplicates only with the
// same Idempotency-Key, no event the plan did not produce.
func (v verdict) ok() bool {
	return v.auditErr == nil && v.crm.Totals.Missing == 0 && v.crm.Totals.ReorderedKeys == 0 &&
		v.crm.Totals.Unexpected == 0 && len(v.dupMixedKeys) == 0 && v.audit.OK()
}

// judge reads the CRM's check of the plan and its records, and runs
// `sluice audit --json`.
func (s *suite) judge(ctx context.Context, expected map[string][]string) (verdict, error) {
	var v verdict
	// The records first, the check after: when the drain timed out the
	// services are still delivering, and an event the check finds missing
	// must not be called a hole because a later event of its key was
	// delivered after the check (deliveries only add records). So the
	// records are the older snapshot: an event missing in the newer check
	// with a later event of its key in the older records was really
	// overtaken. (The other way round, the 2026-12-07 runs reported
	// dozens of "holes" that were a round delivered between the check and
	// the records.)
	recs, err := s.crm.Records(ctx, 0)
	if err != nil {
		return v, fmt.Errorf("crmsim records: %w", err)
	}
	if v.crm, err = s.crm.Check(ctx, expected); err != nil {
		return v, fmt.Errorf("crmsim check: %w", err)
	}
	st, err := s.crm.Stats(ctx)
	if err != nil {
		return v, err
	}
	v.attempts, v.injected = st.Attempts, st.Injected
	type seen struct {
		n    int
		keys map[string]bool
	}
	byID := map[string]*seen{}
	for i := range recs {
		r := &recs[i]
		if r.Status < 200 || r.Status > 299 {
			continue
		}
		e := byID[r.ID()]
		if e == nil {
			e = &seen{keys: map[string]bool{}}
			byID[r.ID()] = e
		}
		e.n++
		e.keys[r.IdempotencyKey] = true
	}
	for id, e := range byID {
		if e.n < 2 {
			continue
		}
		v.dupEvents++
		if len(e.keys) != 1 || e.keys[""] {
			v.dupMixedKeys = append(v.dupMixedKeys, id)
		}
	}
	sort.Strings(v.dupMixedKeys)
	for _, k := range v.crm.Keys {
		if len(k.Missing) == 0 {
			continue
		}
		ids := expected[k.Key]
		last := -1
		for i, id := range ids {
			if byID[id] != nil {
				last = i
			}
		}
		missing := map[string]bool{}
		for _, id := range k.Missing {
			missing[id] = true
		}
		for i := 0; i < last; i++ {
			if missing[ids[i]] {
				v.holes = append(v.holes, ids[i])
			}
		}
	}
	v.audit, v.auditErr = s.runAudit(ctx)
	return v, nil
}

// runAudit runs `sluice audit --json` (exit status 3 means findings: the
// report is still printed).
func (s *suite) runAudit(ctx context.Context) (ledger.Report, error) {
	var rep ledger.Report
	cmd := exec.CommandContext(ctx, s.sluice, "audit", "--json", "--config", s.config)
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		stderr := ""
		if exit != nil {
			stderr = string(exit.Stderr)
		}
		return rep, fmt.Errorf("sluice audit: %v: %s", err, stderr)
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return rep, fmt.Errorf("sluice audit --json: %w", err)
	}
	return rep, nil
}

// findings lists the keys with a finding (at most max per side), short:
// a count and the first ids, for the summary.
func (v verdict) findings(max int) []string {
	var out []string
	n := 0
	for _, k := range v.crm.Keys {
		if len(k.Missing) == 0 && k.Reordered == nil && len(k.Unexpected) == 0 {
			continue
		}
		if n++; n > max {
			out = append(out, fmt.Sprintf("CRM side: ... %d more keys", countCRMKeys(v.crm)-max))
			break
		}
		line := "CRM side: " + k.Key + ":"
		if len(k.Missing) > 0 {
			line += fmt.Sprintf(" %d not delivered (first %s)", len(k.Missing), k.Missing[0])
		}
		if k.Reordered != nil {
			b, _ := json.Marshal(k.Reordered)
			line += " reordered " + string(b)
		}
		if len(k.Unexpected) > 0 {
			line += fmt.Sprintf(" %d unexpected (first %s)", len(k.Unexpected), k.Unexpected[0])
		}
		out = append(out, line)
	}
	n = 0
	for _, k := range v.audit.Keys {
		if len(k.Lost) == 0 && len(k.Reordered) == 0 {
			continue
		}
		if n++; n > max {
			out = append(out, "audit: ... more keys")
			break
		}
		line := "audit: " + k.Key + ":"
		if len(k.Lost) > 0 {
			b, _ := json.Marshal(k.Lost[0])
			line += fmt.Sprintf(" %d LOST (first %s)", len(k.Lost), b)
		}
		if len(k.Reordered) > 0 {
			b, _ := json.Marshal(k.Reordered[0])
			line += fmt.Sprintf(" %d REORDERED (first %s)", len(k.Reordered), b)
		}
		out = append(out, line)
	}
	for i, id := range v.holes {
		if i >= max {
			break
		}
		out = append(out, "CRM side: undelivered although a later event of its key was delivered: "+id)
	}
	for i, id := range v.dupMixedKeys {
		if i >= max {
			break
		}
		out = append(out, "duplicate with different Idempotency-Keys: "+id)
	}
	return out
}

func countCRMKeys(r crmsim.Report) int {
	n := 0
	for _, k := range r.Keys {
		if len(k.Missing) > 0 || k.Reordered != nil || len(k.Unexpected) > 0 {
			n++
		}
	}
	return n
}
