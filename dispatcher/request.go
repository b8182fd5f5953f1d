package dispatcher

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/topology"
)

// Limits on the fields of a dispatch message.
const (
	maxIDKeyLen  = 512
	maxIDFromLen = 1024
	maxPathLen   = 2048
	// MaxRetryAfter caps a CRM's Retry-After, so a bogus answer cannot stop
	// a partition for days.
	MaxRetryAfter = time.Hour
)

// The field checks below are hand-written matchers, run for every
// dispatch message; each comment gives the equivalent regular expression.

// validEventID matches ^[!-~]{1,128}$.
func validEventID(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '!' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validWord matches ^[A-Za-z0-9_-]{1,max}$.
func validWord(s string, max int) bool {
	if len(s) < 1 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validType matches ^[A-Za-z0-9_-]{1,64}$.
func validType(s string) bool { return validWord(s, 64) }

// validMethod matches ^[A-Z]{1,16}$.
func validMethod(s string) bool {
	if len(s) < 1 || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// validObject matches ^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}$.
func validObject(s string) bool {
	for n := 1; ; n++ {
		word, rest, more := strings.Cut(s, ".")
		if n > 4 || !validWord(word, 64) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// DecodeRequest parses the body of a dispatch message strictly (unknown
// fields and trailing data are errors), fills the catalog's defaults
// (mode send, method POST, update method PATCH, id_from ".id", id_key =
// key) and checks every field that ends up in a URL, a header or a KV key.
// Errors wrap ErrUndecodable.
func DecodeRequest(b []byte) (crmreq.Request, error) {
	r, ok := decodeFast(b)
	if !ok {
		var err error
		if r, err = decodeStd(b); err != nil {
			return r, err
		}
	}
	if r.Mode == "" {
		r.Mode = catalog.ModeSend
	}
	if r.Method == "" {
		r.Method = http.MethodPost
	}
	if r.UpdateMethod == "" {
		r.UpdateMethod = http.MethodPatch
	}
	if r.IDFrom == "" {
		r.IDFrom = ".id"
	}
	if r.IDKey == "" {
		r.IDKey = r.Key
	}
	if err := checkRequest(r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return r, nil
}

// decodeStd is DecodeRequest's decoding with encoding/json, for what
// decodeFast leaves to it.
func decodeStd(b []byte) (crmreq.Request, error) {
	var r crmreq.Request
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return r, fmt.Errorf("%w: trailing data after the JSON object", ErrUndecodable)
	}
	return r, nil
}

func checkRequest(r crmreq.Request) error {
	if !validEventID(r.EventID) {
		return errors.New("event_id: 1-128 printable ASCII characters required")
	}
	if !validType(r.Type) {
		return errors.New("type: 1-64 characters of A-Z a-z 0-9 _ - required")
	}
	if err := topology.CheckKey(r.Key); err != nil {
		return fmt.Errorf("key: %w", err)
	}
	needCreate, needUpdate := false, false
	switch r.Mode {
	case catalog.ModeSend, catalog.ModeCreate:
		needCreate = true
	case catalog.ModeUpdate:
		needUpdate = true
	case catalog.ModeUpsert:
		needCreate, needUpdate = true, true
	default:
		return fmt.Errorf("mode: %q is not send, create, update or upsert", r.Mode)
	}
	if needCreate {
		if !validMethod(r.Method) {
			return fmt.Errorf("method: %q is not an HTTP method", r.Method)
		}
		if err := checkPath(r.Path); err != nil {
			return fmt.Errorf("path: %w", err)
		}
	}
	if r.Mode == catalog.ModeCreate && r.UpdatePath != "" {
		needUpdate = true // adopting a found record updates it
	}
	if needUpdate {
		if !validMethod(r.UpdateMethod) {
			return fmt.Errorf("update_method: %q is not an HTTP method", r.UpdateMethod)
		}
		if err := checkPath(r.UpdatePath); err != nil {
			return fmt.Errorf("update_path: %w", err)
		}
	}
	if r.Mode != catalog.ModeSend {
		if !validObject(r.Object) {
			return fmt.Errorf("object: %q must be dot-separated A-Z a-z 0-9 _ - words", r.Object)
		}
		if len(r.IDKey) > maxIDKeyLen || !utf8.ValidString(r.IDKey) {
			return fmt.Errorf("id_key: at most %d bytes of UTF-8", maxIDKeyLen)
		}
		if len(r.IDFrom) > maxIDFromLen {
			return fmt.Errorf("id_from: longer than %d bytes", maxIDFromLen)
		}
		if len(r.ConflictIDFrom) > maxIDFromLen {
			return fmt.Errorf("conflict_id_from: longer than %d bytes", maxIDFromLen)
		}
	}
	if f := r.Find; f != nil {
		switch {
		case r.Mode != catalog.ModeCreate && r.Mode != catalog.ModeUpsert:
			return errors.New("find: only for modes create and upsert")
		case !validMethod(f.Method):
			return fmt.Errorf("find.method: %q is not an HTTP method", f.Method)
		case f.IDFrom == "" || len(f.IDFrom) > maxIDFromLen:
			return fmt.Errorf("find.id_from: 1-%d bytes required", maxIDFromLen)
		}
		if err := checkPath(f.Path); err != nil {
			return fmt.Errorf("find.path: %w", err)
		}
	}
	return nil
}

// checkPath accepts an absolute path (with an optional query) that cannot
// change the CRM host once appended to the base URL.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("required")
	case len(p) > maxPathLen:
		return fmt.Errorf("longer than %d bytes", maxPathLen)
	case p[0] != '/' || strings.HasPrefix(p, "//"):
		return errors.New(`must start with a single "/"`)
	case strings.ContainsAny(p, "#\\"):
		return errors.New(`must not contain "#" or "\"`)
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] >= 0x7f {
			return errors.New("must not contain spaces, control or non-ASCII characters (escape them)")
		}
	}
	if _, err := url.Parse(p); err != nil {
		return errors.New("not a valid URL path")
	}
	return nil
}

// kvKey is the CRM id bucket key of an entity: <object>.<base64url(idKey)>.
func kvKey(object, idKey string) string {
	return object + "." + base64.RawURLEncoding.EncodeToString([]byte(idKey))
}

// ParseRetryAfter parses a Retry-After header value: delay-seconds or an
// HTTP date (relative to now). A date in the past gives 0. The result is
// capped at MaxRetryAfter. ok is false for an empty or unparsable value.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
				return MaxRetryAfter, true
			}
			return 0, false
		}
		if n >= uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(now)
	switch {
	case d < 0:
		return 0, true
	case d > MaxRetryAfter:
		return MaxRetryAfter, true
	}
	return d, true
}

// headerSafe turns s into a NATS/HTTP header value: control characters
// become spaces, invalid UTF-8 is replaced, and the result is cut at max
// bytes on a rune boundary.
func headerSafe(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
