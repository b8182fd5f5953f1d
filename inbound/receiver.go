package inbound

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// unroutedKey is the entity key of an item whose type is unknown or whose
// key cannot be derived: it is stored anyway and the writer parks it with
// the reason.
const unroutedKey = "_unrouted"

// unreadableType is the subject type of an item that has no usable type or
// id (or a body that could not be split): stored with the reason and
// parked by the writer.
const unreadableType = "_unreadable"

type source struct {
	cfg Source
	v   Verifier
	env *compiledEnvelope
}

// Response is the JSON body of every receiver answer.
type Response struct {
	// Accepted counts the items stored (duplicates included).
	Accepted int `json:"accepted,omitempty"`
	// Duplicates counts items JetStream already had (a CRM retry).
	Duplicates int `json:"duplicates,omitempty"`
	// Unreadable counts the stored items that will be parked because they
	// could not be routed (no type, no id, a body that is not JSON…).
	Unreadable int `json:"unreadable,omitempty"`
	// Error explains a 4xx/5xx.
	Error string `json:"error,omitempty"`
}

// Handler is the receiver's HTTP handler: one route per source path.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, src := range s.sources {
		mux.Handle(src.cfg.Path, s.receive(src))
	}
	return mux
}

// Refusal reasons (logs and the answer's error).
const (
	refusedMethod      = "method not allowed"
	refusedUnreadable  = "body not readable"
	refusedTooLarge    = "body larger than inbound.max_body_bytes"
	refusedTooMany     = "more items than inbound.max_items"
	refusedSignature   = "signature or timestamp invalid"
	refusedUnavailable = "queue unavailable, retry later"
	// refusedDeliveryID: the delivery id travels in a message header; one
	// this long cannot be stored, now or on any retry (431, permanent).
	refusedDeliveryID = "delivery id (webhook-id or the source's id_header) longer than 1024 bytes"
)

// maxDeliveryID is the longest delivery id the receiver stores.
const maxDeliveryID = 1024

// receive answers 401 only for authentication, 413 for size, 431 for a
// delivery id too long to store, 503 for storage trouble (405 for a method
// other than POST). A body that passed
// its signature is never refused for its shape: whatever cannot be routed
// is stored and parked by the writer.
func (s *Service) receive(src *source) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			s.stats.badRequest.Add(1)
			s.refused(src, r, refusedMethod, nil)
			w.Header().Set("Allow", http.MethodPost)
			reply(w, http.StatusMethodNotAllowed, Response{Error: "POST only"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			s.stats.tooLarge.Add(1)
			s.refused(src, r, refusedTooLarge, nil)
			reply(w, http.StatusRequestEntityTooLarge, Response{Error: refusedTooLarge})
			return
		case err != nil:
			s.stats.badRequest.Add(1)
			s.refused(src, r, refusedUnreadable, err)
			reply(w, http.StatusBadRequest, Response{Error: refusedUnreadable})
			return
		}
		var delivery string
		if rv, ok := src.v.(RequestVerifier); ok {
			delivery, err = rv.VerifyRequest(r, body, s.now())
		} else {
			delivery, err = src.v.Verify(r.Header, body, s.now())
		}
		if err != nil {
			s.stats.unauthorized.Add(1)
			s.refused(src, r, refusedSignature, err)
			reply(w, http.StatusUnauthorized, Response{Error: refusedSignature})
			return
		}
		if len(delivery) > maxDeliveryID {
			s.stats.badRequest.Add(1)
			s.refused(src, r, refusedDeliveryID, nil)
			reply(w, http.StatusRequestHeaderFieldsTooLarge, Response{Error: refusedDeliveryID})
			return
		}
		ectx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
		items, err := src.env.SplitContext(ectx, body, r.Header, delivery, src.cfg.Name, s.cfg.MaxItems)
		cancel()
		if err != nil { // errTooMany
			s.stats.tooLarge.Add(1)
			s.refused(src, r, refusedTooMany, nil)
			reply(w, http.StatusRequestEntityTooLarge, Response{Error: refusedTooMany})
			return
		}
		resp, err := s.enqueue(r.Context(), src, delivery, items)
		if err != nil {
			s.stats.unavailable.Add(1)
			s.refused(src, r, refusedUnavailable, err)
			w.Header().Set("Retry-After", "5")
			reply(w, http.StatusServiceUnavailable, Response{Error: refusedUnavailable})
			return
		}
		reply(w, http.StatusAccepted, resp)
	}
}

// refused logs a refusal, at most a burst of 10 a second per service
// (source, remote address and reason; never the body, headers or secrets).
func (s *Service) refused(src *source, r *http.Request, reason string, err error) {
	ev := s.refusalLog.Warn().Str("source", src.cfg.Name).Str("remote", r.RemoteAddr).Str("reason", reason)
	if err != nil && (errors.Is(err, ErrSignature) || errors.Is(err, ErrTimestamp)) {
		ev = ev.Err(err) // these texts name headers and skew, never values
	}
	ev.Msg("webhook refused")
}

func refusalLogger(l zerolog.Logger) zerolog.Logger {
	return l.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second})
}

// Headers the receiver adds besides HeaderSource, HeaderItemID,
// HeaderDelivery and HeaderReceivedAt.
const (
	// HeaderKey, HeaderVersion and HeaderOccurredAt carry the envelope's
	// entity key, version and occurred_at when it maps them.
	HeaderKey        = "Sluice-Inbound-Key"
	HeaderVersion    = "Sluice-Inbound-Version"
	HeaderOccurredAt = "Sluice-Inbound-Occurred-At"
	// HeaderIndex is the item's position in the request body.
	HeaderIndex = "Sluice-Inbound-Index"
	// HeaderProblems lists why an item could not be routed (JSON
	// [{"field","reason"}]); the writer parks it with them.
	HeaderProblems = "Sluice-Inbound-Problems"
)

// enqueue publishes every item, in order, and returns only when JetStream
// has acked all of them. Nats-Msg-Id is <source>:<item id>, so a CRM retry
// is a duplicate and a partially stored batch is completed by the retry.
func (s *Service) enqueue(ctx context.Context, src *source, delivery string, items []Item) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	now := s.now().UTC().Format(time.RFC3339Nano)
	var resp Response
	for _, it := range items {
		typ, key := it.Type, unroutedKey
		if len(it.Problems) > 0 {
			typ = unreadableType
			resp.Unreadable++
			s.stats.unreadable.Add(1)
		} else {
			key = s.routeKey(it)
		}
		m := s.itemMsg(src, delivery, now, it, typ, key)
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

// itemMsg is the stored message of an item: the item as data, the
// dedupe id as Nats-Msg-Id, and the Sluice-Inbound-* headers.
func (s *Service) itemMsg(src *source, delivery, receivedAt string, it Item, typ, key string) *nats.Msg {
	m := nats.NewMsg(s.deps.Names.InboundSubject(typ, key))
	m.Data = it.Raw
	m.Header.Set(nats.MsgIdHdr, src.cfg.Name+":"+it.ID)
	m.Header.Set(HeaderSource, src.cfg.Name)
	m.Header.Set(HeaderItemID, it.ID)
	m.Header.Set(HeaderIndex, strconv.Itoa(it.Index))
	if delivery != "" {
		m.Header.Set(HeaderDelivery, delivery)
	}
	m.Header.Set(HeaderReceivedAt, receivedAt)
	for h, v := range map[string]string{HeaderKey: it.Key, HeaderVersion: it.Version, HeaderOccurredAt: it.OccurredAt} {
		if v != "" {
			m.Header.Set(h, v)
		}
	}
	if it.Whole {
		m.Header.Set(HeaderWhole, "1")
	}
	if len(it.Problems) > 0 {
		b, _ := json.Marshal(it.Problems)
		m.Header.Set(HeaderProblems, string(b))
	}
	return m
}

// routeKey derives the item's entity key for its subject (and so its
// lane): the envelope's key, else the type's key expression. An item that
// has none (or whose key expression runs past query_timeout) is stored
// under unroutedKey and parked by the writer.
func (s *Service) routeKey(it Item) string {
	t, ok := s.types[it.Type]
	if !ok {
		return unroutedKey
	}
	if it.Key != "" {
		return it.Key
	}
	if t.key == nil {
		return unroutedKey
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(it.Raw))
	if err != nil {
		return unroutedKey
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.QueryTimeout)
	defer cancel()
	key, err := t.entity(ctx, doc)
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
