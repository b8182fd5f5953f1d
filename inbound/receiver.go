package inbound

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// unroutedKey is the entity key of an item whose type is unknown or whose
// key cannot be derived: it is stored anyway and the writer parks it with
// the reason.
const unroutedKey = "_unrouted"

type source struct {
	cfg Source
	v   Verifier
}

// Response is the JSON body of every receiver answer.
type Response struct {
	// Accepted counts the items stored (duplicates included).
	Accepted int `json:"accepted,omitempty"`
	// Duplicates counts items JetStream already had (a CRM retry).
	Duplicates int `json:"duplicates,omitempty"`
	// Error and Fields explain a 4xx/5xx.
	Error  string       `json:"error,omitempty"`
	Fields []FieldError `json:"fields,omitempty"`
}

// Handler is the receiver's HTTP handler: one route per source path.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, src := range s.sources {
		mux.Handle(src.cfg.Path, s.receive(src))
	}
	return mux
}

func (s *Service) receive(src *source) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			reply(w, http.StatusMethodNotAllowed, Response{Error: "POST only"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			s.stats.tooLarge.Add(1)
			reply(w, http.StatusRequestEntityTooLarge, Response{Error: "body larger than inbound.max_body_bytes"})
			return
		case err != nil:
			s.stats.badRequest.Add(1)
			reply(w, http.StatusBadRequest, Response{Error: "cannot read body"})
			return
		}
		delivery, err := src.v.Verify(r.Header, body, s.now())
		if err != nil {
			s.stats.unauthorized.Add(1)
			s.log.Warn().Str("source", src.cfg.Name).Str("remote", r.RemoteAddr).Err(err).Msg("webhook refused")
			reply(w, http.StatusUnauthorized, Response{Error: "signature or timestamp invalid"})
			return
		}
		items, err := DecodeWebhook(body, delivery, s.cfg.MaxItems)
		var bad *BadWebhook
		switch {
		case errors.Is(err, errTooMany):
			s.stats.tooLarge.Add(1)
			reply(w, http.StatusRequestEntityTooLarge, Response{Error: err.Error()})
			return
		case errors.As(err, &bad):
			s.stats.badRequest.Add(1)
			reply(w, http.StatusBadRequest, Response{Error: "unreadable webhook", Fields: bad.Fields})
			return
		case err != nil:
			s.stats.badRequest.Add(1)
			reply(w, http.StatusBadRequest, Response{Error: err.Error()})
			return
		}
		resp, err := s.enqueue(r.Context(), src, delivery, items)
		if err != nil {
			s.stats.unavailable.Add(1)
			s.log.Warn().Str("source", src.cfg.Name).Err(err).Msg("webhook not stored; answering 503")
			w.Header().Set("Retry-After", "5")
			reply(w, http.StatusServiceUnavailable, Response{Error: "queue unavailable, retry later"})
			return
		}
		reply(w, http.StatusAccepted, resp)
	}
}

// enqueue publishes every item, in order, and returns only when JetStream
// has acked all of them. Nats-Msg-Id is <source>:<item id>, so a CRM retry
// is a duplicate and a partially stored batch is completed by the retry.
func (s *Service) enqueue(ctx context.Context, src *source, delivery string, items []Item) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	now := s.now().UTC().Format(time.RFC3339Nano)
	var resp Response
	for _, it := range items {
		m := nats.NewMsg(s.deps.Names.InboundSubject(it.Type, s.routeKey(it)))
		m.Data = it.Raw
		m.Header.Set(nats.MsgIdHdr, src.cfg.Name+":"+it.ID)
		m.Header.Set(HeaderSource, src.cfg.Name)
		m.Header.Set(HeaderItemID, it.ID)
		if delivery != "" {
			m.Header.Set(HeaderDelivery, delivery)
		}
		m.Header.Set(HeaderReceivedAt, now)
		ack, err := s.deps.JS.PublishMsg(ctx, m)
		if err != nil {
			return Response{}, err
		}
		resp.Accepted++
		s.stats.received.Add(1)
		if ack.Duplicate {
			resp.Duplicates++
			s.stats.duplicates.Add(1)
		}
	}
	return resp, nil
}

// routeKey derives the item's entity key for its subject (and so its
// lane); an item that has none is stored under unroutedKey and parked by
// the writer.
func (s *Service) routeKey(it Item) string {
	t, ok := s.types[it.Type]
	if !ok {
		return unroutedKey
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(it.Raw))
	if err != nil {
		return unroutedKey
	}
	key, err := t.entity(doc)
	if err != nil {
		return unroutedKey
	}
	return key
}

func reply(w http.ResponseWriter, status int, r Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(r)
}
