package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/retry"
)

// HTTP posts events to ingest's POST /v1/events: one event as
// application/json, a batch as application/x-ndjson. The server checks the
// type's schema and may derive keys (Config.DeriveKey).
type HTTP struct {
	url   string
	token string
	hc    *http.Client
}

// maxReply bounds how much of a reply is read.
const maxReply = 4 << 20

// NewHTTP returns the HTTP transport for ingest at baseURL (e.g.
// "https://sluice.example.com"); token is the bearer token ("" for none);
// hc nil means http.DefaultClient.
func NewHTTP(baseURL, token string, hc *http.Client) *HTTP {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &HTTP{url: strings.TrimRight(baseURL, "/") + "/v1/events", token: token, hc: hc}
}

// DerivesKeys reports that ingest derives missing keys (Config.DeriveKey).
func (t *HTTP) DerivesKeys() bool { return true }

// reply is ingest's reply body.
type reply struct {
	Error   string       `json:"error"`
	Errors  []FieldError `json:"errors"`
	Results []Result     `json:"results"`
}

// Send posts events and waits for the reply.
func (t *HTTP) Send(ctx context.Context, events []*envelope.Envelope) ([]Result, error) {
	var body bytes.Buffer
	ct := "application/json"
	if len(events) > 1 {
		ct = "application/x-ndjson"
	}
	enc := json.NewEncoder(&body) // one compact object per line
	for _, ev := range events {
		if err := enc.Encode(ev); err != nil {
			return nil, &InvalidError{Fields: []FieldError{{ID: ev.ID,
				FieldError: envelope.FieldError{Field: "data", Reason: err.Error()}}}}
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, &body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	req.Header.Set("Content-Type", ct)
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", t.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, fmt.Errorf("POST %s: reading the reply: %w", t.url, err)
	}
	return decodeReply(resp.StatusCode, resp.Header.Get("Retry-After"), b, len(events))
}

// decodeReply turns an ingest reply into results or a typed error.
func decodeReply(status int, retryAfter string, body []byte, n int) ([]Result, error) {
	var r reply
	jerr := json.Unmarshal(body, &r)
	switch {
	case status == http.StatusAccepted || status == http.StatusOK:
		if jerr != nil {
			return nil, fmt.Errorf("status %d with an unreadable reply: %w", status, jerr)
		}
		if len(r.Results) != n {
			return nil, fmt.Errorf("status %d with %d results for %d events", status, len(r.Results), n)
		}
		return r.Results, nil
	case status == http.StatusBadRequest && jerr == nil && len(r.Errors) > 0:
		return nil, &InvalidError{Fields: r.Errors}
	case status == http.StatusBadRequest:
		return nil, &InvalidError{Fields: []FieldError{{FieldError: envelope.FieldError{Reason: replyError(r, body)}}}}
	case retry.Retryable(status): // 5xx, 408, 429
		err := fmt.Errorf("status %d: %s", status, replyError(r, body))
		if secs, perr := strconv.Atoi(strings.TrimSpace(retryAfter)); perr == nil && secs >= 0 {
			return nil, &retryAfterError{after: time.Duration(secs) * time.Second, err: err}
		}
		return nil, err
	default:
		return nil, fmt.Errorf("%w: status %d: %s", ErrRejected, status, replyError(r, body))
	}
}

func replyError(r reply, body []byte) string {
	if r.Error != "" {
		return r.Error
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
