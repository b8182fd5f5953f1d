package topology

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLen is the longest key accepted, in bytes before escaping.
const MaxKeyLen = 200

// Key charset rule: a key may be any non-empty UTF-8 string of at most
// MaxKeyLen bytes without control characters (C0, DEL and C1, U+0080 to
// U+009F). In subjects it travels as a single token: the bytes A-Z a-z 0-9 and - _ : @ + = are kept as they are,
// every other byte (including '.', '*', '>', spaces, '~' and non-ASCII) is
// written as ~XX (upper-case hex). The mapping is one-to-one, so the order and
// partition of a key never depend on how it was escaped.

// CheckKey reports whether key obeys the charset rule.
func CheckKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrBadKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadKey, MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: not valid UTF-8", ErrBadKey)
	}
	for _, r := range key {
		if unicode.IsControl(r) { // C0, DEL and C1 (U+0080-U+009F)
			return fmt.Errorf("%w: contains a control character", ErrBadKey)
		}
	}
	return nil
}

func keepByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
		b == '-' || b == '_' || b == ':' || b == '@' || b == '+' || b == '='
}

// KeyToken escapes key into a single subject token.
func KeyToken(key string) string {
	clean := true
	for i := 0; i < len(key); i++ {
		if !keepByte(key[i]) {
			clean = false
			break
		}
	}
	if clean {
		return key
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(key) + 8)
	for i := 0; i < len(key); i++ {
		c := key[i]
		if keepByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('~')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// KeyFromToken reverses KeyToken.
func KeyFromToken(tok string) (string, error) {
	if !strings.Contains(tok, "~") {
		return tok, nil
	}
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		if tok[i] != '~' {
			b.WriteByte(tok[i])
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("%w: truncated escape in %q", ErrBadKey, tok)
		}
		var v byte
		for _, h := range []byte{tok[i+1], tok[i+2]} {
			v <<= 4
			switch {
			case h >= '0' && h <= '9':
				v |= h - '0'
			case h >= 'A' && h <= 'F':
				v |= h - 'A' + 10
			default:
				return "", fmt.Errorf("%w: bad escape in %q", ErrBadKey, tok)
			}
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}
