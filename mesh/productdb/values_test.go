package productdb_test

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/itchyny/gojq"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/productdb"
)

func TestJSONValue(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123000000, time.FixedZone("x", 2*3600))
	cases := []struct {
		name   string
		in     any
		dbType string
		want   any
	}{
		{"nil", nil, "TEXT", nil},
		{"bytes text", []byte("héllo"), "VARCHAR", "héllo"},
		{"bytes blob", []byte{0xff, 0x00, 0x01}, "BLOB", "/wAB"},
		{"string", "x", "TEXT", "x"},
		{"int64", int64(42), "INTEGER", 42},
		{"uint64 huge", uint64(math.MaxUint64), "UNSIGNED BIGINT", new(big.Int).SetUint64(math.MaxUint64)},
		{"float32", float32(1.5), "FLOAT", 1.5},
		{"nan", math.NaN(), "FLOAT8", "NaN"},
		{"inf", math.Inf(-1), "FLOAT8", "-Infinity"},
		{"bool", true, "BOOL", true},
		{"time", ts, "TIMESTAMPTZ", "2024-05-06T05:08:09.123Z"},
		{"decimal bytes", []byte("12.50"), "DECIMAL", json.Number("12.50")},
		{"numeric string", "-0.001", "NUMERIC", json.Number("-0.001")},
		{"numeric nan stays string", "NaN", "NUMERIC", "NaN"},
		{"decimal junk stays string", "12,5", "DECIMAL", "12,5"},
		{"jsonb", `{"a":[1,2.5,"x"]}`, "JSONB", map[string]any{"a": []any{json.Number("1"), json.Number("2.5"), "x"}}},
		{"json bytes", []byte(`"s"`), "JSON", "s"},
		{"json invalid stays string", `{"a":`, "JSON", `{"a":`},
		{"json trailing stays string", `1 2`, "JSON", `1 2`},
		{"other", struct{ A int }{1}, "X", "{1}"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := productdb.JSONValue(c.in, c.dbType)
			require.Equal(t, c.want, got)
			_, err := json.Marshal(got)
			require.NoError(t, err)
		})
	}
}

func TestKeyParam(t *testing.T) {
	cases := []struct {
		in      any
		want    any
		wantErr bool
	}{
		{nil, nil, false},
		{"abc", "abc", false},
		{42, int64(42), false},
		{float64(42), int64(42), false},
		{1.5, 1.5, false},
		{big.NewInt(7), int64(7), false},
		{new(big.Int).Lsh(big.NewInt(1), 70), "1180591620717411303424", false},
		{json.Number("12"), int64(12), false},
		{json.Number("99999999999999999999"), "99999999999999999999", false},
		{json.Number("1e3"), int64(1000), false},
		{math.NaN(), nil, true},
		{math.Inf(1), nil, true},
		{true, nil, true},
		{[]any{1}, nil, true},
		{map[string]any{}, nil, true},
	}
	for _, c := range cases {
		got, err := productdb.KeyParam(c.in)
		if c.wantErr {
			require.ErrorIs(t, err, productdb.ErrBadKey, "%v", c.in)
			continue
		}
		require.NoError(t, err, "%v", c.in)
		require.Equal(t, c.want, got, "%v", c.in)
	}
	require.Equal(t, "42", productdb.KeyString(int64(42)))
	require.Equal(t, "1.5", productdb.KeyString(1.5))
	require.Equal(t, "x", productdb.KeyString("x"))
}

func TestIsDataError(t *testing.T) {
	require.True(t, productdb.IsDataError(&pgconn.PgError{Code: "22P02"}))
	require.False(t, productdb.IsDataError(&pgconn.PgError{Code: "42P01"}))
	require.False(t, productdb.IsDataError(errors.New("connection refused")))
	require.False(t, productdb.IsDataError(nil))
}

// FuzzJSONValue feeds arbitrary column bytes and type names (what a
// database hands back is outside our control) and checks the result always
// encodes as JSON and is a value gojq accepts.
func FuzzJSONValue(f *testing.F) {
	for _, s := range [][2]string{{"12.5", "DECIMAL"}, {`{"a":1}`, "JSONB"}, {"\xff", "BLOB"}, {"1e999", "NUMERIC"},
		{`[1,{"b":null}]`, "JSON"}, {"x", "TEXT"}, {"-0", "NUMERIC"}, {`"\ud800"`, "JSON"}} {
		f.Add([]byte(s[0]), s[1])
	}
	code, err := gojq.Compile(mustParse(f, "[., type]"))
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, b []byte, dbType string) {
		for _, v := range []any{productdb.JSONValue(b, dbType), productdb.JSONValue(string(b), dbType)} {
			if _, err := json.Marshal(v); err != nil {
				t.Fatalf("JSONValue(%q, %q) = %#v does not encode: %v", b, dbType, v, err)
			}
			out, ok := code.Run(v).Next()
			if !ok {
				t.Fatalf("gojq gave no output for %#v", v)
			}
			if err, isErr := out.(error); isErr {
				t.Fatalf("gojq rejects %#v: %v", v, err)
			}
		}
	})
}

// FuzzKeyParam decodes arbitrary JSON the way a jq "from" expression sees
// event data and checks KeyParam either refuses it with ErrBadKey or gives
// a parameter type every driver binds.
func FuzzKeyParam(f *testing.F) {
	for _, s := range []string{`42`, `"abc"`, `1.5`, `1e308`, `123456789012345678901234567890`, `null`, `true`, `[1]`, `{"a":1}`, `-0`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, js string) {
		dec := json.NewDecoder(stringsReader(js))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return
		}
		for _, in := range []any{v, toGoJQ(v)} {
			k, err := productdb.KeyParam(in)
			if err != nil {
				if !errors.Is(err, productdb.ErrBadKey) {
					t.Fatalf("KeyParam(%#v): error %v does not wrap ErrBadKey", in, err)
				}
				continue
			}
			switch x := k.(type) {
			case nil, string, int64:
			case float64:
				if math.IsNaN(x) || math.IsInf(x, 0) || x == math.Trunc(x) && math.Abs(x) < 1<<62 {
					t.Fatalf("KeyParam(%#v) = %v: should be refused or an int64", in, x)
				}
			default:
				t.Fatalf("KeyParam(%#v) = %T", in, k)
			}
			_ = productdb.KeyString(k)
		}
	})
}
