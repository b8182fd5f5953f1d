package ledger

import "sluice.dev/mesh/redact"

// Redacted replaces a sensitive value (redact.Redacted).
const Redacted = redact.Redacted

// Redactor hides the values of sensitive JSON fields: mesh/redact's rules
// (secret-like names, matched as substrings) plus ledger.sensitive_fields.
type Redactor = redact.Redactor

// NewRedactor redacts the given field names (any case) and every name
// mesh/redact considers secret.
func NewRedactor(fields []string) *Redactor { return redact.New(fields...) }
