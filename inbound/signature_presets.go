package inbound

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Presets are declarative signature schemes of well-known senders, usable
// as inbound.sources[].scheme; fields of sources[].signature override
// them. Each is checked against the sender's documented example in
// signature_vectors_test.go.
var Presets = map[string]Signature{
	// https://www.standardwebhooks.com (also Svix with webhook- headers).
	SchemeStandardWebhooks: {Header: "webhook-signature", Split: " ", Key: "v1", KeySep: ",", Encoding: "base64",
		Signed: "{id}.{timestamp}.{body}", IDHeader: "webhook-id", TimestampHeader: "webhook-timestamp", SecretEncoding: "whsec"},
	// https://docs.svix.com/receiving/verifying-payloads/how-manual
	"svix": {Header: "svix-signature", Split: " ", Key: "v1", KeySep: ",", Encoding: "base64",
		Signed: "{id}.{timestamp}.{body}", IDHeader: "svix-id", TimestampHeader: "svix-timestamp", SecretEncoding: "whsec"},
	// Raw-body HMAC in one header (the legacy fields header/encoding/prefix/id_header).
	SchemeHMACSHA256: {Header: "X-Signature", Encoding: "hex"},
	// https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
	"github": {Header: "X-Hub-Signature-256", Prefix: "sha256=", Encoding: "hex", IDHeader: "X-GitHub-Delivery"},
	// https://docs.stripe.com/webhooks#verify-manually
	"stripe": {Header: "Stripe-Signature", Split: ",", Key: "v1", Encoding: "hex",
		Signed: "{timestamp}.{body}", TimestampKey: "t"},
	// https://api.slack.com/authentication/verifying-requests-from-slack
	"slack": {Header: "X-Slack-Signature", Prefix: "v0=", Encoding: "hex",
		Signed: "v0:{timestamp}:{body}", TimestampHeader: "X-Slack-Request-Timestamp"},
	// https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook
	"shopify": {Header: "X-Shopify-Hmac-Sha256", Encoding: "base64", IDHeader: "X-Shopify-Webhook-Id"},
	// https://developer.zendesk.com/documentation/webhooks/verifying/
	"zendesk": {Header: "X-Zendesk-Webhook-Signature", Encoding: "base64", Signed: "{timestamp}{body}",
		TimestampHeader: "X-Zendesk-Webhook-Signature-Timestamp", TimestampFormat: "rfc3339",
		IDHeader: "X-Zendesk-Webhook-Invocation-Id"},
	// https://developers.hubspot.com/docs/api/webhooks/validating-requests (v3)
	"hubspot-v3": {Header: "X-HubSpot-Signature-v3", Encoding: "base64", Signed: "{method}{url}{body}{timestamp}",
		TimestampHeader: "X-HubSpot-Request-Timestamp", TimestampFormat: "unix_ms"},
	// https://www.twilio.com/docs/usage/security#validating-requests (form posts)
	"twilio": {Header: "X-Twilio-Signature", Algorithm: "sha1", Encoding: "base64", Signed: "{url}{form_sorted}",
		IDHeader: "I-Twilio-Idempotency-Token"},
}

func builtinSchemes() map[string]SchemeFactory {
	m := map[string]SchemeFactory{
		SchemeHMAC:        func(s Source, tol time.Duration) (Verifier, error) { return newDeclarative(s, tol, Signature{}) },
		SchemeBasic:       newBasic,
		SchemeHeaderToken: newHeaderToken,
	}
	for name, p := range Presets {
		m[name] = func(s Source, tol time.Duration) (Verifier, error) { return newDeclarative(s, tol, p) }
	}
	// The legacy hmac-sha256 fields (header, encoding, prefix, id_header)
	// still configure it.
	m[SchemeHMACSHA256] = func(s Source, tol time.Duration) (Verifier, error) {
		p := Presets[SchemeHMACSHA256].merge(Signature{Header: s.Header, Encoding: s.Encoding, Prefix: s.Prefix, IDHeader: s.IDHeader})
		return newDeclarative(s, tol, p)
	}
	return m
}

// basic is HTTP basic authentication against "user:password" secrets.
type basic struct {
	creds    [][]byte
	idHeader string
}

func newBasic(s Source, _ time.Duration) (Verifier, error) {
	v := &basic{idHeader: s.Signature.IDHeader}
	for i, sec := range s.Secrets {
		if !strings.Contains(sec, ":") {
			return nil, fmt.Errorf("secrets[%d]: basic secrets are user:password", i)
		}
		v.creds = append(v.creds, []byte(sec))
	}
	return v, nil
}

func (v *basic) Verify(h http.Header, _ []byte, _ time.Time) (string, error) {
	r := http.Request{Header: h}
	u, p, ok := r.BasicAuth()
	if !ok {
		return "", fmt.Errorf("%w: basic credentials missing", ErrSignature)
	}
	given := []byte(u + ":" + p)
	match := 0
	for _, c := range v.creds {
		match |= subtle.ConstantTimeCompare(given, c)
	}
	if match != 1 {
		return "", fmt.Errorf("%w: basic credentials do not match", ErrSignature)
	}
	return headerOrEmpty(h, v.idHeader), nil
}

// headerToken is a static token in a header (nothing is signed).
type headerToken struct {
	header, prefix, idHeader string
	tokens                   [][]byte
}

func newHeaderToken(s Source, _ time.Duration) (Verifier, error) {
	v := &headerToken{header: s.Signature.Header, prefix: s.Signature.Prefix, idHeader: s.Signature.IDHeader}
	if v.header == "" {
		v.header = "Authorization"
	}
	for i, sec := range s.Secrets {
		if sec == "" {
			return nil, fmt.Errorf("secrets[%d]: empty token", i)
		}
		v.tokens = append(v.tokens, []byte(sec))
	}
	if len(v.tokens) == 0 {
		return nil, errors.New("secrets: at least one token is required")
	}
	return v, nil
}

func (v *headerToken) Verify(h http.Header, _ []byte, _ time.Time) (string, error) {
	for _, val := range h.Values(v.header) {
		tok, ok := strings.CutPrefix(strings.TrimSpace(val), v.prefix)
		if !ok {
			continue
		}
		match := 0
		for _, t := range v.tokens {
			match |= subtle.ConstantTimeCompare([]byte(tok), t)
		}
		if match == 1 {
			return headerOrEmpty(h, v.idHeader), nil
		}
	}
	return "", fmt.Errorf("%w: header %s missing or no match", ErrSignature, v.header)
}

func headerOrEmpty(h http.Header, name string) string {
	if name == "" {
		return ""
	}
	return h.Get(name)
}
