package productdb

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// JSONValue converts a value scanned from a column of database type dbType
// (sql.ColumnType.DatabaseTypeName) into a value that encoding/json and
// gojq both accept: nil, bool, int, float64, *big.Int, json.Number, string,
// []any or map[string]any.
//
//   - text and UTF-8 []byte → string; other []byte (blobs) → base64 string
//   - DECIMAL/NUMERIC text that is a JSON number → json.Number (exact)
//   - JSON/JSONB text → the decoded JSON value (string if it does not parse)
//   - integers → int (or *big.Int beyond int's range)
//   - NaN and ±Inf floats → the strings "NaN", "Infinity", "-Infinity"
//   - time.Time → RFC 3339 in UTC, with fractional seconds when it has them
//   - anything else → fmt.Sprint of it
func JSONValue(v any, dbType string) any {
	switch x := v.(type) {
	case nil:
		return nil
	case bool:
		return x
	case string:
		return textValue(x, dbType)
	case []byte:
		if !utf8.Valid(x) {
			return base64.StdEncoding.EncodeToString(x)
		}
		return textValue(string(x), dbType)
	case int64:
		return intValue(x)
	case int:
		return x
	case int32:
		return int(x)
	case int16:
		return int(x)
	case int8:
		return int(x)
	case uint64:
		if x <= math.MaxInt64 {
			return intValue(int64(x))
		}
		return new(big.Int).SetUint64(x)
	case uint32:
		return intValue(int64(x))
	case uint16:
		return int(x)
	case uint8:
		return int(x)
	case float64:
		return floatValue(x)
	case float32:
		return floatValue(float64(x))
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

func intValue(x int64) any {
	if int64(int(x)) == x {
		return int(x)
	}
	return big.NewInt(x)
}

func floatValue(x float64) any {
	switch {
	case math.IsNaN(x):
		return "NaN"
	case math.IsInf(x, 1):
		return "Infinity"
	case math.IsInf(x, -1):
		return "-Infinity"
	}
	return x
}

var numberRe = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

func textValue(s, dbType string) any {
	switch t := strings.ToUpper(dbType); {
	case strings.Contains(t, "DECIMAL") || strings.Contains(t, "NUMERIC"):
		if len(s) <= 400 && numberRe.MatchString(s) {
			return json.Number(s)
		}
	case t == "JSON" || t == "JSONB":
		if json.Valid([]byte(s)) {
			dec := json.NewDecoder(strings.NewReader(s))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err == nil {
				return v
			}
		}
	}
	return s
}

// KeyParam turns a lookup's key (the output of its jq "from" expression)
// into a query parameter: strings stay strings, integral numbers become
// int64 (integers beyond int64 become their decimal string), other numbers
// float64. A nil result means the key is null. Booleans, arrays, objects
// and non-finite numbers are errors wrapping ErrBadKey.
func KeyParam(v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return x, nil
	case int:
		return int64(x), nil
	case int64:
		return x, nil
	case float64:
		return floatKey(x)
	case *big.Int:
		if x.IsInt64() {
			return x.Int64(), nil
		}
		return x.String(), nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		if b, ok := new(big.Int).SetString(string(x), 10); ok {
			return b.String(), nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("%w: %q is not a number", ErrBadKey, string(x))
		}
		return floatKey(f)
	}
	return nil, fmt.Errorf("%w: a %s cannot be a lookup key", ErrBadKey, jqTypeName(v))
}

func floatKey(f float64) (any, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%w: %v is not a finite number", ErrBadKey, f)
	}
	if f == math.Trunc(f) && f >= -(1<<63) && f < 1<<63 {
		return int64(f), nil
	}
	return f, nil
}

func jqTypeName(v any) string {
	switch v.(type) {
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// KeyString renders a KeyParam result for cache keys, logs and park
// reasons: strings as they are, numbers in decimal.
func KeyString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case nil:
		return "null"
	}
	return fmt.Sprint(v)
}

// IsDataError reports whether err is the database refusing the key value
// itself (PostgreSQL SQLSTATE class 22, e.g. "abc" for an integer column).
// Retrying cannot help; the caller parks the event. Every other error (an
// outage, a timeout) is worth retrying.
func IsDataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && len(pe.Code) == 5 && pe.Code[:2] == "22"
}
