package productdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// ExecScript runs a multi-statement SQL script (schema and seed rows) one
// statement at a time, stopping at the first error, which names the
// statement's number and first line. See SplitScript for the syntax.
func ExecScript(ctx context.Context, db *sql.DB, script string) error {
	for i, stmt := range SplitScript(script) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			first, _, _ := strings.Cut(stmt, "\n")
			return fmt.Errorf("script statement %d (%s): %w", i+1, first, err)
		}
	}
	return nil
}

// SplitScript splits a script into statements at semicolons that are not
// inside a '…' string, a "…" or `…` identifier, a -- or /* */ comment or a
// PostgreSQL $tag$…$tag$ string. Statements are trimmed; empty ones (only
// blanks and comments) are dropped. Bodies that contain semicolons outside
// such quotes (SQLite CREATE TRIGGER … BEGIN … END) are not supported.
func SplitScript(script string) []string {
	var out []string
	start, content := 0, false
	flush := func(end int) {
		if content {
			if s := strings.TrimSpace(script[start:end]); s != "" {
				out = append(out, s)
			}
		}
		start, content = end+1, false
	}
	for i := 0; i < len(script); i++ {
		c := script[i]
		switch {
		case c == ';':
			flush(i)
		case c == '\'' || c == '"' || c == '`':
			content = true
			i = skipPast(script, i+1, string(c))
		case c == '-' && strings.HasPrefix(script[i:], "--"):
			i = skipPast(script, i+2, "\n")
		case c == '/' && strings.HasPrefix(script[i:], "/*"):
			i = skipPast(script, i+2, "*/")
		case c == '$':
			content = true
			if tag := dollarTag(script[i:]); tag != "" {
				i = skipPast(script, i+len(tag), tag)
			}
		case c != ' ' && c != '\t' && c != '\n' && c != '\r':
			content = true
		}
	}
	flush(len(script))
	return out
}

// skipPast returns the index of the last byte of the first end at or after
// from, or len(s)-1 when there is none (an unterminated quote or comment
// runs to the end of the script).
func skipPast(s string, from int, end string) int {
	if from > len(s) {
		return len(s) - 1
	}
	j := strings.Index(s[from:], end)
	if j < 0 {
		return len(s) - 1
	}
	return from + j + len(end) - 1
}

// dollarTag returns the $tag$ (or $$) that s starts with, or "".
func dollarTag(s string) string {
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			return s[:i+1]
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80:
		case c >= '0' && c <= '9' && i > 1:
		default:
			return ""
		}
	}
	return ""
}
