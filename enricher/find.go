package enricher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/itchyny/gojq"

	"sluice.dev/mesh/crmreq"
)

// buildFind evaluates a type's crm.find over {event, lookups, body} into
// the ready-to-send lookup the dispatcher runs when a create is uncertain.
func (s *Service) buildFind(ctx context.Context, mp *mapping, event any, rows map[string]any, body []byte) (*crmreq.Find, error) {
	var b any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	in := map[string]any{"event": event, "lookups": rows, "body": b}
	def := mp.target.Find
	v, err := s.jq(ctx, mp.find.path, in)
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	path, ok := v.(string)
	if !ok || path == "" {
		return nil, errors.New("path: the expression must give a non-empty string")
	}
	f := &crmreq.Find{Method: def.Method, Path: path, IDFrom: def.IDFrom, BeforeCreate: def.BeforeCreate}
	if mp.find.body != nil {
		v, err := s.jq(ctx, mp.find.body, in)
		if err == nil {
			f.Body, err = gojq.Marshal(v)
		}
		if err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
	}
	return f, nil
}
