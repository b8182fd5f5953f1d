package productdb

import "errors"

// ErrBadKey means a lookup key value can never match a row (a boolean, an
// array, an object or a non-finite number). The caller parks the event.
var ErrBadKey = errors.New("productdb: invalid lookup key")
