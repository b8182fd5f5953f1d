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

// Built-in signature schemes.
const (
	// SchemeStandardWebhooks is https://www.standardwebhooks.com: headers
	// webhook-id, webhook-timestamp and webhook-signature ("v1,<base64>"
	// entries separated by spaces), HMAC-SHA256 over "id.timestamp.body".
	SchemeStandardWebhooks = "standard-webhooks"
	// SchemeHMACSHA256 is an HMAC-SHA256 of the raw body in one header,
	// hex or base64, with an optional prefix such as "sha256=".
	SchemeHMACSHA256 = "hmac-sha256"
)

var (
	schemesMu sync.RWMutex
	schemes   = map[string]SchemeFactory{
		SchemeStandardWebhooks: newStandardWebhooks,
		SchemeHMACSHA256:       newHMACHeader,
	}
)

// RegisterScheme adds a signature scheme under name, usable as
// inbound.sources[].scheme. A CRM-specific scheme is one small file with a
// Verifier and an init() calling RegisterScheme.
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

type standardWebhooks struct {
	keys      [][]byte
	tolerance time.Duration
}

func newStandardWebhooks(s Source, tolerance time.Duration) (Verifier, error) {
	v := &standardWebhooks{tolerance: tolerance}
	for i, sec := range s.Secrets {
		k, err := standardKey(sec)
		if err != nil {
			return nil, fmt.Errorf("secrets[%d]: %w", i, err)
		}
		v.keys = append(v.keys, k)
	}
	return v, nil
}

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

func (v *standardWebhooks) Verify(h http.Header, body []byte, now time.Time) (string, error) {
	id, tsText, sigs := h.Get(HeaderWebhookID), h.Get(HeaderWebhookTimestamp), h.Get(HeaderWebhookSignature)
	if id == "" || tsText == "" || sigs == "" {
		return "", fmt.Errorf("%w: webhook-id, webhook-timestamp and webhook-signature are required", ErrSignature)
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return "", fmt.Errorf("%w: webhook-timestamp is not unix seconds", ErrTimestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > v.tolerance || d < -v.tolerance {
		return "", fmt.Errorf("%w: webhook-timestamp is %s away from now", ErrTimestamp, d.Round(time.Second))
	}
	var given [][]byte
	for _, entry := range strings.Fields(sigs) {
		ver, sig, ok := strings.Cut(entry, ",")
		if !ok || ver != "v1" {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(sig); err == nil {
			given = append(given, b)
		}
	}
	for _, k := range v.keys {
		want := standardMAC(k, id, tsText, body)
		for _, g := range given {
			if hmac.Equal(want, g) {
				return id, nil
			}
		}
	}
	return "", fmt.Errorf("%w: no v1 signature matches", ErrSignature)
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

type hmacHeader struct {
	keys     [][]byte
	header   string
	prefix   string
	encoding string
	idHeader string
}

func newHMACHeader(s Source, _ time.Duration) (Verifier, error) {
	if s.Encoding != "hex" && s.Encoding != "base64" {
		return nil, fmt.Errorf("encoding: %q must be hex or base64", s.Encoding)
	}
	if s.Header == "" {
		return nil, errors.New("header: required")
	}
	v := &hmacHeader{header: s.Header, prefix: s.Prefix, encoding: s.Encoding, idHeader: s.IDHeader}
	for i, sec := range s.Secrets {
		if sec == "" {
			return nil, fmt.Errorf("secrets[%d]: empty secret", i)
		}
		v.keys = append(v.keys, []byte(sec))
	}
	return v, nil
}

func (v *hmacHeader) Verify(h http.Header, body []byte, _ time.Time) (string, error) {
	var id string
	if v.idHeader != "" {
		id = h.Get(v.idHeader)
	}
	for _, val := range h.Values(v.header) {
		sig, ok := strings.CutPrefix(strings.TrimSpace(val), v.prefix)
		if !ok {
			continue
		}
		var given []byte
		var err error
		if v.encoding == "hex" {
			given, err = hex.DecodeString(sig)
		} else {
			given, err = base64.StdEncoding.DecodeString(sig)
		}
		if err != nil {
			continue
		}
		for _, k := range v.keys {
			m := hmac.New(sha256.New, k)
			m.Write(body)
			if hmac.Equal(m.Sum(nil), given) {
				return id, nil
			}
		}
	}
	return "", fmt.Errorf("%w: header %s missing or no match", ErrSignature, v.header)
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
