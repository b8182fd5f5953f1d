package catalog

import (
	"encoding/json"
	"math/big"

	"github.com/itchyny/gojq"
)

// The plain-Go subset's functions, constructors and operators (see JQ).

func (c *fastCompiler) fn(f *gojq.Func) fastFn {
	if f == nil {
		return nil
	}
	if f.Name[0] == '$' {
		if !isVar(f.Name) || len(f.Args) > 0 {
			return nil
		}
		for i := len(c.scope) - 1; i >= 0; i-- {
			if c.scope[i].name == f.Name {
				slot := c.scope[i].slot
				return func(_ any, vars []any) (any, bool) { return vars[slot], true }
			}
		}
		return nil // bound outside the expression (gojq's variables)
	}
	if len(f.Args) == 0 {
		switch f.Name {
		case "tostring":
			return func(dot any, _ []any) (any, bool) {
				s, ok := toString(dot)
				return s, ok
			}
		case "tojson":
			return func(dot any, _ []any) (any, bool) {
				if jqKind(dot) == jqOther {
					return nil, false
				}
				b, err := gojq.Marshal(dot)
				return string(b), err == nil
			}
		case "not":
			return func(dot any, _ []any) (any, bool) { return !truthy(dot), true }
		case "type":
			return func(dot any, _ []any) (any, bool) {
				if jqKind(dot) == jqOther {
					return nil, false
				}
				return gojq.TypeOf(dot), true
			}
		}
		return nil
	}
	if f.Name == "with_entries" && len(f.Args) == 1 {
		return c.withEntries(f.Args[0])
	}
	return nil
}

// withEntries is with_entries(select(cond)): the object's entries whose
// {key, value} satisfies cond. Any other with_entries is gojq's.
func (c *fastCompiler) withEntries(arg *gojq.Query) fastFn {
	t := arg.Term
	if t == nil || t.Type != gojq.TermTypeFunc || len(t.SuffixList) > 0 ||
		t.Func.Name != "select" || len(t.Func.Args) != 1 {
		return nil
	}
	cond := c.query(t.Func.Args[0])
	if cond == nil {
		return nil
	}
	return func(dot any, vars []any) (any, bool) {
		m, ok := dot.(map[string]any)
		if !ok {
			return nil, false
		}
		// cond is pure and gives one value per entry, and the result is an
		// object: to_entries' key order cannot show.
		out := make(map[string]any, len(m))
		entry := map[string]any{}
		for k, v := range m {
			entry["key"], entry["value"] = k, v
			keep, ok := cond(entry, vars)
			if !ok {
				return nil, false
			}
			if truthy(keep) {
				out[k] = v
			}
		}
		return out, true
	}
}

func (c *fastCompiler) object(o *gojq.Object) fastFn {
	type field struct {
		key string
		val fastFn
	}
	fields := make([]field, 0, len(o.KeyVals))
	for _, kv := range o.KeyVals {
		var key string
		switch {
		case kv.Key != "" && kv.Key[0] != '$':
			key = kv.Key
		case kv.Key == "" && kv.KeyString != nil && kv.KeyString.Queries == nil:
			key = kv.KeyString.Str
		default:
			return nil // {$x}, {(expr): v}, {"\(x)": v}
		}
		var val fastFn
		if kv.Val == nil { // {a} is {a: .a}
			val = func(dot any, _ []any) (any, bool) { return index(dot, key) }
		} else if val = c.query(kv.Val); val == nil {
			return nil
		}
		fields = append(fields, field{key, val})
	}
	return func(dot any, vars []any) (any, bool) {
		m := make(map[string]any, len(fields))
		for _, f := range fields {
			v, ok := f.val(dot, vars)
			if !ok {
				return nil, false
			}
			m[f.key] = v
		}
		return m, true
	}
}

// array is [a, b, ...], each element one value.
func (c *fastCompiler) array(a *gojq.Array) fastFn {
	var elems []fastFn
	var walk func(q *gojq.Query) bool
	walk = func(q *gojq.Query) bool {
		if q.Term == nil && q.Op == gojq.OpComma && len(q.Patterns) == 0 && len(q.FuncDefs) == 0 {
			return walk(q.Left) && walk(q.Right)
		}
		f := c.query(q)
		elems = append(elems, f)
		return f != nil
	}
	if a.Query != nil && !walk(a.Query) {
		return nil
	}
	return func(dot any, vars []any) (any, bool) {
		out := make([]any, len(elems))
		for i, e := range elems {
			v, ok := e(dot, vars)
			if !ok {
				return nil, false
			}
			out[i] = v
		}
		return out, true
	}
}

// cond is if/elif/else/end; a missing else is ".".
func (c *fastCompiler) cond(x *gojq.If) fastFn {
	type branch struct{ cond, then fastFn }
	branches := []branch{{c.query(x.Cond), c.query(x.Then)}}
	for _, e := range x.Elif {
		branches = append(branches, branch{c.query(e.Cond), c.query(e.Then)})
	}
	for _, b := range branches {
		if b.cond == nil || b.then == nil {
			return nil
		}
	}
	els := func(dot any, _ []any) (any, bool) { return dot, true }
	if x.Else != nil {
		if els = c.query(x.Else); els == nil {
			return nil
		}
	}
	return func(dot any, vars []any) (any, bool) {
		for _, b := range branches {
			v, ok := b.cond(dot, vars)
			if !ok {
				return nil, false
			}
			if truthy(v) {
				return b.then(dot, vars)
			}
		}
		return els(dot, vars)
	}
}

func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	}
	return true
}

// The kinds of jq value, in jq's sort order.
const (
	jqNull = iota
	jqBool
	jqNumber
	jqString
	jqArray
	jqObject
	jqOther // not a gojq value
)

func jqKind(v any) int {
	switch v.(type) {
	case nil:
		return jqNull
	case bool:
		return jqBool
	case int, float64, *big.Int, json.Number:
		return jqNumber
	case string:
		return jqString
	case []any:
		return jqArray
	case map[string]any:
		return jqObject
	}
	return jqOther
}

// toString is jq's tostring: a string as is, anything else as JSON.
func toString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	}
	if jqKind(v) == jqOther {
		return "", false
	}
	b, err := gojq.Marshal(v)
	return string(b), err == nil
}

// add is jq's + for null, strings, arrays and objects; numbers (int
// overflow, json.Number, big) and type errors are gojq's.
func add(a, b any) (any, bool) {
	// null + x is x, but gojq turns a number x into its own type first.
	if a == nil && jqKind(b) != jqOther && jqKind(b) != jqNumber {
		return b, true
	}
	if b == nil && jqKind(a) != jqOther && jqKind(a) != jqNumber {
		return a, true
	}
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			return x + y, true
		}
	case []any:
		if y, ok := b.([]any); ok {
			out := make([]any, 0, len(x)+len(y))
			return append(append(out, x...), y...), true
		}
	case map[string]any:
		if y, ok := b.(map[string]any); ok {
			out := make(map[string]any, len(x)+len(y))
			for k, v := range x {
				out[k] = v
			}
			for k, v := range y {
				out[k] = v
			}
			return out, true
		}
	}
	return nil, false
}

// equal is jq's == where it is plain: values of different kinds, null,
// booleans and strings. Numbers, arrays and objects are gojq's.
func equal(a, b any) (eq, ok bool) {
	ka, kb := jqKind(a), jqKind(b)
	switch {
	case ka == jqOther || kb == jqOther:
		return false, false
	case ka != kb:
		return false, true
	case ka == jqNull:
		return true, true
	case ka == jqBool:
		return a.(bool) == b.(bool), true
	case ka == jqString:
		return a.(string) == b.(string), true
	}
	return false, false
}
