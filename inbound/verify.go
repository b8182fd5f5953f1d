package inbound

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Verifier checks that a webhook request comes from its CRM. It runs before
// anything else is done with the request. Implementations compare in
// constant time and never log secrets.
type Verifier interface {
	// Verify checks the signature of body under the request headers h at
	// time now. It returns the request's delivery id when the scheme has
	// one ("" otherwise), and an error wrapping ErrSignature or
	// ErrTimestamp when the request must be refused (401).
	Verify(h http.Header, body []byte, now time.Time) (deliveryID string, err error)
}

// SchemeFactory builds a Verifier for a configured source. tolerance is
// inbound.tolerance, for schemes that sign a timestamp.
type SchemeFactory func(s Source, tolerance time.Duration) (Verifier, error)

// Built-in signature schemes. Every HMAC scheme is a preset of the
// declarative form (Signature, signature_presets.go); "hmac" is that form
// with nothing preset.
const (
	// SchemeStandardWebhooks is https://www.standardwebhooks.com: headers
	// webhook-id, webhook-timestamp and webhook-signature ("v1,<base64>"
	// entries separated by spaces), HMAC-SHA256 over "id.timestamp.body".
	SchemeStandardWebhooks = "standard-webhooks"
	// SchemeHMACSHA256 is an HMAC-SHA256 of the raw body in one header,
	// hex or base64, with an optional prefix such as "sha256=".
	SchemeHMACSHA256 = "hmac-sha256"
	// SchemeHMAC is the declarative scheme: everything from Source.Signature.
	SchemeHMAC = "hmac"
	// SchemeBasic is HTTP basic authentication; secrets are "user:password".
	SchemeBasic = "basic"
	// SchemeHeaderToken is a static token in a header (Source.Signature.Header,
	// default Authorization, with an optional prefix such as "Bearer ").
	SchemeHeaderToken = "header-token"
)

// RequestVerifier is a Verifier that also needs the request line (method,
// URL): the receiver calls VerifyRequest when the verifier has it.
type RequestVerifier interface {
	Verifier
	VerifyRequest(r *http.Request, body []byte, now time.Time) (deliveryID string, err error)
}

var (
	schemesMu sync.RWMutex
	schemes   = builtinSchemes()
)

// RegisterScheme adds a signature scheme under name, usable as
// inbound.sources[].scheme. A CRM-specific scheme is one small file with a
// Verifier and an init() calling RegisterScheme; most need none: a
// declarative scheme ("hmac" with a signature block) or a preset covers them.
func RegisterScheme(name string, f SchemeFactory) {
	schemesMu.Lock()
	defer schemesMu.Unlock()
	schemes[name] = f
}

// Schemes lists the registered scheme names.
func Schemes() []string {
	schemesMu.RLock()
	defer schemesMu.RUnlock()
	out := make([]string, 0, len(schemes))
	for n := range schemes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// NewVerifier builds the Verifier of a configured source (after
// Config.WithDefaults); errors wrap ErrUnknownScheme or name the field.
func NewVerifier(s Source, tolerance time.Duration) (Verifier, error) {
	schemesMu.RLock()
	f, ok := schemes[s.Scheme]
	schemesMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("scheme: %w: %q (have %s)", ErrUnknownScheme, s.Scheme, strings.Join(Schemes(), ", "))
	}
	if len(s.Secrets) == 0 {
		return nil, errors.New("secrets: at least one secret is required")
	}
	return f(s, tolerance)
}

// Standard Webhooks headers.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// standardKey decodes a "whsec_<base64>" secret; a secret without the
// prefix is used as raw bytes.
func standardKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		if secret == "" {
			return nil, errors.New("empty secret")
		}
		return []byte(secret), nil
	}
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(k) == 0 {
		return nil, errors.New("whsec_ secret is not valid base64")
	}
	return k, nil
}

func standardMAC(key []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Sign returns the Standard Webhooks signature header value ("v1,<base64>")
// of body sent with id at ts under secret ("whsec_<base64>" or raw). The
// CRM simulator and tests use it; producers may too.
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	k, err := standardKey(secret)
	if err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(standardMAC(k, id, strconv.FormatInt(ts.Unix(), 10), body)), nil
}

// SignHeaders sets the three Standard Webhooks headers on h for body.
func SignHeaders(h http.Header, secret, id string, ts time.Time, body []byte) error {
	sig, err := Sign(secret, id, ts, body)
	if err != nil {
		return err
	}
	h.Set(HeaderWebhookID, id)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderWebhookSignature, sig)
	return nil
}

// SignHMAC returns prefix + the HMAC-SHA256 of body under secret, in
// encoding "hex" or "base64": the header value of the hmac-sha256 scheme.
func SignHMAC(secret string, body []byte, encoding, prefix string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	if encoding == "base64" {
		return prefix + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	return prefix + hex.EncodeToString(m.Sum(nil))
}
