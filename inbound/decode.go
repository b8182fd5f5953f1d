package inbound

import (
	"errors"
	"regexp"
)

// FieldError names one problem of a request or item.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

var (
	typeRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	idRe   = regexp.MustCompile(`^[\x21-\x7e]{1,200}$`)
)

// errTooMany means a body has more than inbound.max_items items (413).
var errTooMany = errors.New("inbound: too many items")
