package inbound

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"sluice.dev/mesh/lane"
)

// HeaderWhole marks a stored item whose data is the whole request body
// (a body that could not be split, or a single-object body of the
// default envelope): a replay splits it again.
const HeaderWhole = "Sluice-Inbound-Whole"

// reroute maps a replayed _unreadable or _unrouted item again with its
// source's current envelope and catalog (after the operator fixed them)
// and forwards what now routes to its entity's subject, under a new
// message id (the first one was taken by the unroutable copy). What still
// does not route is parked again. $headers is empty on a replay: the
// request headers are not stored.
func (s *Service) reroute(m *lane.Msg) lane.Outcome {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.QueryTimeout)
	defer cancel()
	name := m.Header.Get(HeaderSource)
	var src *source
	for _, sc := range s.sources {
		if sc.cfg.Name == name {
			src = sc
		}
	}
	if src == nil {
		return s.park("unknown source", fmt.Errorf("%w: source %q is not configured", ErrUnreadable, name), nil)
	}
	delivery := m.Header.Get(HeaderDelivery)
	var items []Item
	if m.Header.Get(HeaderWhole) != "" {
		var err error
		if items, err = src.env.SplitContext(ctx, m.Data, http.Header{}, delivery, name, s.cfg.MaxItems); err != nil {
			return s.park("unreadable webhook", fmt.Errorf("%w: %w", ErrUnreadable, err), nil)
		}
	} else {
		idx, _ := strconv.Atoi(m.Header.Get(HeaderIndex))
		var v any
		if err := json.Unmarshal(m.Data, &v); err != nil {
			return s.park("unreadable webhook", fmt.Errorf("%w: stored item is not JSON", ErrUnreadable), nil)
		}
		items = []Item{src.env.item(ctx, v, idx, false, m.Data, []any{map[string]any{}, delivery, name, idx}, delivery, name)}
		items[0].Raw = m.Data
	}
	receivedAt := m.Header.Get(HeaderReceivedAt)
	if receivedAt == "" {
		receivedAt = m.Stored.UTC().Format(time.RFC3339Nano)
	}
	out := make([]*nats.Msg, 0, len(items))
	for _, it := range items {
		if len(it.Problems) > 0 {
			return s.parkUnreadableItem(it.Problems)
		}
		key := s.routeKey(it)
		if key == unroutedKey {
			return s.park("no entity key", fmt.Errorf("%w: type %q unknown or no entity key", ErrUnreadable, it.Type), nil)
		}
		msg := s.itemMsg(src, delivery, receivedAt, it, it.Type, key)
		msg.Header.Set(nats.MsgIdHdr, name+":"+it.ID+"#rerouted")
		out = append(out, msg)
	}
	return lane.Forward(out...)
}
