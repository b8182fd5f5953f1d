// Package redact is Sluice's one place that decides what is too sensitive
// to show. Every surface that shows event data, CRM bodies, error texts or
// configuration (logs, `sluice trace`, `sluice parked show`, the watchdog
// status page and its API, ledger records, `sluice config print`) goes
// through a Redactor, so a field hidden in one place is hidden in all.
//
// # Which fields are sensitive
//
// A JSON object key (or config key) is sensitive, matched without regard to
// case, when:
//
//   - its name contains one of the secret substrings (Patterns): pass, pwd,
//     secret, token, auth, credential, cookie, card, cvv, signature,
//     private. So user_password, db_pass, passcode, PWD, x-auth-token,
//     client_secret, credit_card_number are hidden. Substrings
//     over-redact on purpose (author, passenger, discard are hidden too):
//     showing too little is the safe side;
//   - one of its words (split at non-letters and camelCase humps) is ssn, or
//     it contains social_security ("ssn" is a word match because
//     business_name and address_number hold the letters s-s-n);
//   - it names a key that is a secret: a word "key" preceded by api,
//     private, secret, access, signing, encryption, master, license, ssh,
//     client or hmac (api_key, apiKey, x-api-key, accessKey, ssh-key), or
//     the single words apikey, privatekey, accesskey. The entity key of an
//     envelope ("key") and routing fields that end or start with key
//     (idempotency_key, partition_key, key_column, sort_key) are
//     identifiers, not secrets, and stay readable;
//   - it is one of the names the operator listed (ledger.sensitive_fields,
//     e.g. email, phone), matched whole, at any depth.
//
// The value of a sensitive key is replaced by "[redacted]" whatever its
// type: an object or array under a sensitive name is hidden as a whole.
//
// # Free text
//
// Error texts and reasons are written not to quote values (the catalog's
// schema errors name the field and the rule, never the value). Text is the
// second line of defence for texts that come from elsewhere (a CRM's
// answer, a jq error, an old record): it hides e-mail addresses,
// `name=value`, `name: value` and `"name":"value"` pairs whose name is
// sensitive, and the value previews of jq errors (string ("…")).
package redact

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// Redacted replaces a sensitive value.
const Redacted = "[redacted]"

// Patterns are the substrings that make a field name sensitive (lower
// case, matched in the lower-cased name).
var Patterns = []string{"pass", "pwd", "secret", "token", "auth", "credential", "cookie", "card", "cvv",
	"signature", "private", "social_security", "socialsecurity"}

// secretKeyWords are the words that, right before the word "key", make a
// key a secret (api_key, accessKey, x-api-key).
var secretKeyWords = map[string]bool{"api": true, "private": true, "secret": true, "access": true,
	"signing": true, "encryption": true, "master": true, "license": true, "ssh": true, "client": true, "hmac": true}

// secretWords are whole words that are secrets on their own.
var secretWords = map[string]bool{"ssn": true, "apikey": true, "privatekey": true, "accesskey": true}

// Redactor hides the values of sensitive fields. The zero value and nil
// apply the built-in rules only; it is safe for concurrent use.
type Redactor struct{ fields map[string]bool }

// New returns a Redactor that also hides the listed field names (whole
// names, any case), e.g. ledger.sensitive_fields.
func New(fields ...string) *Redactor {
	r := &Redactor{fields: map[string]bool{}}
	for _, f := range fields {
		if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
			r.fields[f] = true
		}
	}
	return r
}

// Default applies the built-in rules only.
var Default = New()

// Sensitive reports whether a field of that name is hidden.
func (r *Redactor) Sensitive(name string) bool {
	low := strings.ToLower(name)
	if r != nil && len(r.fields) > 0 {
		last := low
		if i := strings.LastIndexByte(low, '.'); i >= 0 {
			last = low[i+1:] // a path: data.email
		}
		if r.fields[low] || r.fields[last] {
			return true
		}
	}
	for _, p := range Patterns {
		if strings.Contains(low, p) {
			return true
		}
	}
	ws := words(name)
	for i, w := range ws {
		if secretWords[w] || (w == "key" && i > 0 && secretKeyWords[ws[i-1]]) {
			return true
		}
	}
	return false
}

// words splits a field name into lower-case words at every non-letter,
// non-digit and at camelCase humps: "x-api-key" → x api key, "apiKey" →
// api key, "SSN" → ssn.
func words(name string) []string {
	var out []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			out = append(out, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	rs := []rune(name)
	for i, c := range rs {
		switch {
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			flush()
			continue
		case unicode.IsUpper(c) && i > 0 && (unicode.IsLower(rs[i-1]) ||
			(unicode.IsUpper(rs[i-1]) && i+1 < len(rs) && unicode.IsLower(rs[i+1]))):
			flush()
		}
		cur = append(cur, c)
	}
	flush()
	return out
}

// JSON returns doc with the value of every sensitive object key, at any
// depth, replaced by "[redacted]". A document that is not JSON is not
// shown at all: it comes back as a JSON string saying so. Empty input
// gives nil.
func (r *Redactor) JSON(doc []byte) json.RawMessage {
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return json.RawMessage(strconv.Quote("[not JSON, " + strconv.Itoa(len(doc)) + " bytes: not shown]"))
	}
	out, err := json.Marshal(r.Value(v))
	if err != nil {
		return json.RawMessage(strconv.Quote("[not shown]"))
	}
	return out
}

// Value redacts a decoded JSON value (map[string]any, []any, scalars) in
// place and returns it. Values under names that are not sensitive are kept
// as they are: list personal fields (email, phone) in
// ledger.sensitive_fields.
func (r *Redactor) Value(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if r.Sensitive(k) {
				x[k] = Redacted
			} else {
				x[k] = r.Value(val)
			}
		}
		return x
	case []any:
		for i := range x {
			x[i] = r.Value(x[i])
		}
		return x
	}
	return v
}

var (
	emailRe = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+`)
	// nameSepRe finds the name and separator of name/value pairs in free
	// text: "name": , name=, name: . The value follows (valueRe).
	nameSepRe = regexp.MustCompile(`"?([A-Za-z0-9_\-.]+)"?\s*[:=]\s*`)
	// valueRe is the value at the start of the rest: a quoted string, or a
	// run up to a space or , ; & } ].
	valueRe = regexp.MustCompile(`^(?:\[redacted\]|"(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;&}\]]+)`)
	// jqPreviewRe is gojq's value preview in its errors: string ("abc…").
	jqPreviewRe = regexp.MustCompile(`\b(null|boolean|number|string|array|object) \((?:"(?:[^"\\]|\\.)*"?|[^()]*)\)`)
)

// reasonWords start the reasons Sluice writes after a field name
// ("data.user_password: required"): they are not the field's value.
var reasonWords = map[string]bool{"required": true, "unknown": true, "must": true, "is": true, "does": true,
	"not": true, "missing": true, "invalid": true, "expected": true, "got": true, "[redacted]": true}

// Text hides, in a free text (an error, a reason, a CRM answer), the
// e-mail addresses, the values of sensitive name/value pairs and jq's
// value previews. Use it for texts that may come from outside Sluice; the
// texts Sluice writes itself do not quote values in the first place.
func (r *Redactor) Text(s string) string {
	if s == "" {
		return s
	}
	s = jqPreviewRe.ReplaceAllString(s, "$1 ("+Redacted+")")
	s = r.pairs(s)
	return emailRe.ReplaceAllString(s, Redacted)
}

// pairs hides the value of every sensitive name/value pair of s.
func (r *Redactor) pairs(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range nameSepRe.FindAllStringSubmatchIndex(s, -1) {
		if m[0] < last || !r.Sensitive(s[m[2]:m[3]]) {
			continue
		}
		v := valueRe.FindString(s[m[1]:])
		if v == "" || v == Redacted || v == `"`+Redacted+`"` || reasonWords[v] {
			continue
		}
		b.WriteString(s[last:m[1]])
		if q := v[0]; q == '"' || q == '\'' {
			b.WriteString(string(q) + Redacted + string(q))
		} else {
			b.WriteString(Redacted)
		}
		last = m[1] + len(v)
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// Body shows a message body: JSON with sensitive fields redacted (JSON),
// anything else as text through Text (a form-encoded webhook's
// password=… pairs and e-mail addresses hidden), invalid UTF-8 replaced.
func (r *Redactor) Body(doc []byte) string {
	if json.Valid(doc) {
		return string(r.JSON(doc))
	}
	return r.Text(strings.ToValidUTF8(string(doc), "\uFFFD"))
}
