package inbound

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Signature is a declarative HMAC signature scheme (inbound.sources[].signature,
// scheme "hmac" or a preset such as "stripe"): what is signed, with which
// algorithm, and where and how the signature travels. Presets fill it; any
// field set in the config overrides the preset's.
type Signature struct {
	// Algorithm is sha256 (default), sha1 or sha512.
	Algorithm string `yaml:"algorithm"`
	// Signed is the template of the signed bytes: literals and the parts
	// {body} (raw body), {method}, {url} (url_base + path?query as
	// requested), {path} (path?query), {timestamp}, {id} (delivery id),
	// {header:Name}, {form_sorted} (form fields sorted by name, each
	// name+value, no separators: Twilio). "{{" is a literal "{".
	// Default "{body}".
	Signed string `yaml:"signed"`
	// Header carries the signature. Several header values are tried.
	Header string `yaml:"header"`
	// Split, when set, splits the header value into candidates (" " for
	// Standard Webhooks, "," for Stripe's t=…,v1=… list).
	Split string `yaml:"split"`
	// Key, when set, keeps only candidates "<key><key_sep><value>" and
	// takes the value (e.g. "v1" with key_sep "=" for Stripe, "v1" with
	// key_sep "," for Standard Webhooks); several are allowed.
	Key    string `yaml:"key"`
	KeySep string `yaml:"key_sep"`
	// Prefix is removed from each candidate (e.g. "sha256=", "v0="); a
	// candidate without it does not match.
	Prefix string `yaml:"prefix"`
	// Encoding of the signature: hex (default), base64 or base64url
	// (padding optional for base64url).
	Encoding string `yaml:"encoding"`
	// Embed, when set, says the encoded value is not the bare MAC but the
	// MAC among other fields: a template with {mac} (the raw MAC bytes)
	// exactly once, other parts as in Signed, and {any} (any bytes) at
	// its start or end. E.g. "{header:X-Webhook-Id}:{mac}" for a CRM
	// sending base64("<webhook id>:" + raw MAC).
	Embed string `yaml:"embed"`
	// TimestampHeader names the header with the signed timestamp;
	// TimestampKey takes it from the split key=value list instead (Stripe
	// "t"). Neither: no timestamp, no replay window (document it).
	TimestampHeader string `yaml:"timestamp_header"`
	TimestampKey    string `yaml:"timestamp_key"`
	// TimestampFormat is unix (seconds, default), unix_ms or rfc3339.
	TimestampFormat string `yaml:"timestamp_format"`
	// Tolerance overrides inbound.tolerance for this source.
	Tolerance time.Duration `yaml:"tolerance"`
	// IDHeader names the header with the delivery id ({id}; also the
	// default dedupe id prefix of the envelope).
	IDHeader string `yaml:"id_header"`
	// SecretEncoding is how secrets are given: raw (default), base64, or
	// whsec ("whsec_<base64>", a secret without the prefix is raw).
	SecretEncoding string `yaml:"secret_encoding"`
	// URLBase is the scheme://host the sender called, for {url} behind a
	// proxy (default: http(s)://<Host header>).
	URLBase string `yaml:"url_base"`
}

// merge returns p with every non-zero field of o on top.
func (p Signature) merge(o Signature) Signature {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&p.Algorithm, o.Algorithm)
	set(&p.Signed, o.Signed)
	set(&p.Header, o.Header)
	set(&p.Split, o.Split)
	set(&p.Key, o.Key)
	set(&p.KeySep, o.KeySep)
	set(&p.Prefix, o.Prefix)
	set(&p.Encoding, o.Encoding)
	set(&p.Embed, o.Embed)
	set(&p.TimestampHeader, o.TimestampHeader)
	set(&p.TimestampKey, o.TimestampKey)
	set(&p.TimestampFormat, o.TimestampFormat)
	set(&p.IDHeader, o.IDHeader)
	set(&p.SecretEncoding, o.SecretEncoding)
	set(&p.URLBase, o.URLBase)
	if o.Tolerance != 0 {
		p.Tolerance = o.Tolerance
	}
	return p
}

// part is one piece of a template.
type part struct {
	kind string // lit, body, method, url, path, timestamp, id, header, form_sorted, mac, any
	arg  string // literal text or header name
}

var partKinds = map[string]bool{"body": true, "method": true, "url": true, "path": true, "timestamp": true,
	"id": true, "form_sorted": true}

// parseTemplate splits a template into parts; extra lists the kinds
// allowed besides the common ones (mac, any for embed).
func parseTemplate(t string, extra ...string) ([]part, error) {
	var out []part
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			out = append(out, part{kind: "lit", arg: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c == '{' && i+1 < len(t) && t[i+1] == '{' {
			lit.WriteByte('{')
			i++
			continue
		}
		if c != '{' {
			lit.WriteByte(c)
			continue
		}
		end := strings.IndexByte(t[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("unclosed { at %d", i)
		}
		name := t[i+1 : i+end]
		i += end
		flush()
		if h, ok := strings.CutPrefix(name, "header:"); ok {
			if h == "" {
				return nil, errors.New("{header:} needs a header name")
			}
			out = append(out, part{kind: "header", arg: h})
			continue
		}
		ok := partKinds[name]
		for _, e := range extra {
			ok = ok || name == e
		}
		if !ok {
			return nil, fmt.Errorf("unknown part {%s}", name)
		}
		out = append(out, part{kind: name})
	}
	flush()
	return out, nil
}

// reqParts are the request's values the templates read.
type reqParts struct {
	h         http.Header
	body      []byte
	method    string
	url, path string
	timestamp string
	id        string
}

func (r *reqParts) render(ps []part, w *bytes.Buffer) error {
	for _, p := range ps {
		switch p.kind {
		case "lit":
			w.WriteString(p.arg)
		case "body":
			w.Write(r.body)
		case "method":
			w.WriteString(r.method)
		case "url":
			w.WriteString(r.url)
		case "path":
			w.WriteString(r.path)
		case "timestamp":
			w.WriteString(r.timestamp)
		case "id":
			w.WriteString(r.id)
		case "header":
			w.WriteString(r.h.Get(p.arg))
		case "form_sorted":
			vals, err := url.ParseQuery(string(r.body))
			if err != nil {
				return fmt.Errorf("%w: body is not a form", ErrSignature)
			}
			keys := make([]string, 0, len(vals))
			for k := range vals {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				for _, v := range vals[k] {
					w.WriteString(k)
					w.WriteString(v)
				}
			}
		}
	}
	return nil
}

// declarative is the Verifier of a Signature.
type declarative struct {
	sig       Signature
	keys      [][]byte
	newHash   func() hash.Hash
	signed    []part
	embed     []part // nil: the value is the bare MAC
	tolerance time.Duration
}

func newDeclarative(s Source, tolerance time.Duration, preset Signature) (Verifier, error) {
	sig := preset.merge(s.Signature)
	if sig.Algorithm == "" {
		sig.Algorithm = "sha256"
	}
	if sig.Signed == "" {
		sig.Signed = "{body}"
	}
	if sig.Encoding == "" {
		sig.Encoding = "hex"
	}
	if sig.KeySep == "" {
		sig.KeySep = "="
	}
	if sig.TimestampFormat == "" {
		sig.TimestampFormat = "unix"
	}
	if sig.Tolerance == 0 {
		sig.Tolerance = tolerance
	}
	v := &declarative{sig: sig, tolerance: sig.Tolerance}
	var errs []error
	switch sig.Algorithm {
	case "sha256":
		v.newHash = sha256.New
	case "sha1":
		v.newHash = sha1.New
	case "sha512":
		v.newHash = sha512.New
	default:
		errs = append(errs, fmt.Errorf("signature.algorithm: %q must be sha256, sha1 or sha512", sig.Algorithm))
	}
	switch sig.Encoding {
	case "hex", "base64", "base64url":
	default:
		errs = append(errs, fmt.Errorf("signature.encoding: %q must be hex, base64 or base64url", sig.Encoding))
	}
	switch sig.TimestampFormat {
	case "unix", "unix_ms", "rfc3339":
	default:
		errs = append(errs, fmt.Errorf("signature.timestamp_format: %q must be unix, unix_ms or rfc3339", sig.TimestampFormat))
	}
	if sig.Header == "" {
		errs = append(errs, errors.New("signature.header: required"))
	}
	if sig.TimestampKey != "" && sig.Split == "" {
		errs = append(errs, errors.New("signature.timestamp_key: needs signature.split"))
	}
	if sig.Tolerance < time.Second {
		errs = append(errs, fmt.Errorf("signature.tolerance: %s must be at least 1s", sig.Tolerance))
	}
	var err error
	if v.signed, err = parseTemplate(sig.Signed); err != nil {
		errs = append(errs, fmt.Errorf("signature.signed: %w", err))
	}
	if sig.Embed != "" {
		if v.embed, err = parseTemplate(sig.Embed, "mac", "any"); err != nil {
			errs = append(errs, fmt.Errorf("signature.embed: %w", err))
		} else if err := checkEmbed(v.embed); err != nil {
			errs = append(errs, fmt.Errorf("signature.embed: %w", err))
		}
	}
	needsTS := false
	for _, p := range v.signed {
		needsTS = needsTS || p.kind == "timestamp"
	}
	if needsTS && sig.TimestampHeader == "" && sig.TimestampKey == "" {
		errs = append(errs, errors.New("signature.signed: {timestamp} needs timestamp_header or timestamp_key"))
	}
	for i, sec := range s.Secrets {
		k, err := decodeSecret(sec, sig.SecretEncoding)
		if err != nil {
			errs = append(errs, fmt.Errorf("secrets[%d]: %w", i, err))
		}
		v.keys = append(v.keys, k)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return v, nil
}

func checkEmbed(ps []part) error {
	macs := 0
	for i, p := range ps {
		switch p.kind {
		case "mac":
			macs++
		case "any":
			if i != 0 && i != len(ps)-1 {
				return errors.New("{any} only at the start or the end")
			}
		case "body", "form_sorted":
			return fmt.Errorf("{%s} cannot be embedded", p.kind)
		}
	}
	if macs != 1 {
		return errors.New("needs {mac} exactly once")
	}
	if len(ps) > 1 && ps[0].kind == "any" && ps[len(ps)-1].kind == "any" {
		return errors.New("{any} at the start or the end, not both")
	}
	return nil
}

func decodeSecret(sec, enc string) ([]byte, error) {
	if sec == "" {
		return nil, errors.New("empty secret")
	}
	switch enc {
	case "", "raw":
		return []byte(sec), nil
	case "base64":
		k, err := base64.StdEncoding.DecodeString(sec)
		if err != nil || len(k) == 0 {
			return nil, errors.New("not valid base64")
		}
		return k, nil
	case "whsec":
		return standardKey(sec)
	}
	return nil, fmt.Errorf("signature.secret_encoding: %q must be raw, base64 or whsec", enc)
}

// Verify implements Verifier for callers without the request line
// (method "POST", URL unknown).
func (v *declarative) Verify(h http.Header, body []byte, now time.Time) (string, error) {
	return v.verify(&reqParts{h: h, body: body, method: http.MethodPost}, now)
}

// VerifyRequest implements RequestVerifier: {method}, {url} and {path}
// come from r.
func (v *declarative) VerifyRequest(r *http.Request, body []byte, now time.Time) (string, error) {
	rp := &reqParts{h: r.Header, body: body, method: r.Method, path: r.URL.RequestURI()}
	base := v.sig.URLBase
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	rp.url = strings.TrimRight(base, "/") + rp.path
	return v.verify(rp, now)
}

func (v *declarative) verify(rp *reqParts, now time.Time) (string, error) {
	if v.sig.IDHeader != "" {
		rp.id = rp.h.Get(v.sig.IDHeader)
	}
	var cands []string
	var kv map[string]string
	for _, val := range rp.h.Values(v.sig.Header) {
		pieces := []string{val}
		if v.sig.Split != "" {
			pieces = strings.Split(val, v.sig.Split)
		}
		for _, p := range pieces {
			p = strings.TrimSpace(p)
			if v.sig.TimestampKey != "" {
				if k, val, ok := strings.Cut(p, v.sig.KeySep); ok && k == v.sig.TimestampKey {
					if kv == nil {
						kv = map[string]string{}
					}
					kv[k] = val
				}
			}
			if v.sig.Key != "" {
				k, val, ok := strings.Cut(p, v.sig.KeySep)
				if !ok || k != v.sig.Key {
					continue
				}
				p = val
			}
			sig, ok := strings.CutPrefix(p, v.sig.Prefix)
			if ok && sig != "" {
				cands = append(cands, sig)
			}
		}
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("%w: header %s missing or without a signature", ErrSignature, v.sig.Header)
	}
	if err := v.checkTimestamp(rp, kv, now); err != nil {
		return "", err
	}
	var signed bytes.Buffer
	if err := rp.render(v.signed, &signed); err != nil {
		return "", err
	}
	var given [][]byte
	for _, c := range cands {
		if b, err := decodeSig(c, v.sig.Encoding); err == nil {
			given = append(given, b)
		}
	}
	for _, k := range v.keys {
		m := hmac.New(v.newHash, k)
		m.Write(signed.Bytes())
		mac := m.Sum(nil)
		for _, g := range given {
			if v.matches(rp, mac, g) {
				return rp.id, nil
			}
		}
	}
	return "", fmt.Errorf("%w: no signature matches", ErrSignature)
}

func (v *declarative) checkTimestamp(rp *reqParts, kv map[string]string, now time.Time) error {
	switch {
	case v.sig.TimestampHeader != "":
		rp.timestamp = rp.h.Get(v.sig.TimestampHeader)
	case v.sig.TimestampKey != "":
		rp.timestamp = kv[v.sig.TimestampKey]
	default:
		return nil
	}
	if rp.timestamp == "" {
		return fmt.Errorf("%w: signed timestamp missing", ErrTimestamp)
	}
	var ts time.Time
	switch v.sig.TimestampFormat {
	case "unix", "unix_ms":
		n, err := strconv.ParseInt(rp.timestamp, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: timestamp is not a unix time", ErrTimestamp)
		}
		if v.sig.TimestampFormat == "unix_ms" {
			ts = time.UnixMilli(n)
		} else {
			ts = time.Unix(n, 0)
		}
	default:
		t, err := time.Parse(time.RFC3339Nano, rp.timestamp)
		if err != nil {
			return fmt.Errorf("%w: timestamp is not RFC 3339", ErrTimestamp)
		}
		ts = t
	}
	if d := now.Sub(ts); d > v.tolerance || d < -v.tolerance {
		return fmt.Errorf("%w: timestamp is %s away from now", ErrTimestamp, d.Round(time.Second))
	}
	return nil
}

// matches compares the MAC with a decoded signature value, bare or
// embedded, in constant time.
func (v *declarative) matches(rp *reqParts, mac, given []byte) bool {
	if v.embed == nil {
		return hmac.Equal(mac, given)
	}
	var pre, post bytes.Buffer
	cur := &pre
	anyStart, anyEnd := false, false
	for i, p := range v.embed {
		switch {
		case p.kind == "mac":
			cur = &post
		case p.kind == "any" && i == 0:
			anyStart = true
		case p.kind == "any":
			anyEnd = true
		default:
			_ = rp.render([]part{p}, cur)
		}
	}
	n := pre.Len() + len(mac) + post.Len()
	if len(given) < n || (!anyStart && !anyEnd && len(given) != n) {
		return false
	}
	start := 0 // where pre begins
	if anyStart {
		start = len(given) - n
	}
	a := given[start : start+pre.Len()]
	m := given[start+pre.Len() : start+pre.Len()+len(mac)]
	b := given[start+pre.Len()+len(mac) : start+n]
	ok := subtle.ConstantTimeCompare(a, pre.Bytes()) & subtle.ConstantTimeCompare(b, post.Bytes())
	return ok == 1 && hmac.Equal(m, mac)
}

func decodeSig(s, enc string) ([]byte, error) {
	switch enc {
	case "hex":
		return hex.DecodeString(s)
	case "base64":
		return base64.StdEncoding.DecodeString(s)
	default:
		return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	}
}

// SignEmbedded returns base64(prefix + HMAC-SHA256(secret, body)): the
// header value of a CRM that embeds the raw MAC after other fields (e.g.
// prefix "<webhook id>:"). The CRM simulator and tests use it.
func SignEmbedded(secret string, body []byte, prefix string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(append([]byte(prefix), m.Sum(nil)...))
}
