package ledger

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Redacted replaces a sensitive value.
const Redacted = "[redacted]"

// secretFields are always redacted, whatever ledger.sensitive_fields says.
var secretFields = []string{
	"authorization", "proxy-authorization", "cookie", "set-cookie", "password", "passwd", "secret",
	"client_secret", "token", "access_token", "refresh_token", "id_token", "api_key", "apikey", "x-api-key",
	"private_key", "credentials",
}

// Redactor hides the values of sensitive JSON fields.
type Redactor struct{ fields map[string]bool }

// NewRedactor redacts the given field names (any case) and the secret-like
// ones.
func NewRedactor(fields []string) *Redactor {
	r := &Redactor{fields: map[string]bool{}}
	for _, list := range [][]string{fields, secretFields} {
		for _, f := range list {
			if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
				r.fields[f] = true
			}
		}
	}
	return r
}

// Sensitive reports whether a field of that name is redacted.
func (r *Redactor) Sensitive(name string) bool { return r.fields[strings.ToLower(name)] }

// JSON returns doc with the value of every sensitive object key, at any
// depth, replaced by "[redacted]". A document that is not JSON is not
// shown at all: it comes back as a JSON string saying so.
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
	out, err := json.Marshal(r.value(v))
	if err != nil {
		return json.RawMessage(strconv.Quote("[not shown]"))
	}
	return out
}

func (r *Redactor) value(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if r.Sensitive(k) {
				x[k] = Redacted
			} else {
				x[k] = r.value(val)
			}
		}
		return x
	case []any:
		for i := range x {
			x[i] = r.value(x[i])
		}
		return x
	}
	return v
}
