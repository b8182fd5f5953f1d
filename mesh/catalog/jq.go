package catalog

import (
	"context"
	"strconv"
	"time"

	"github.com/itchyny/gojq"
)

// JQ is a compiled jq expression of the catalog (a key, a lookup's from, a
// body, an id_key, a find).
//
// Most catalog expressions are one-value field copies: objects built from
// paths, variables bound with `as`, `//`, string joins and interpolation,
// `if`, `tostring`. Those also get a plain-Go evaluator (Fast), which runs
// without gojq's interpreter, its environment and its context checks: in
// the enricher, gojq was about a tenth of Sluice's CPU per event. Anything
// outside that subset, and any value the subset does not handle at run
// time (arithmetic on numbers, comparing objects, an error), is left to
// gojq, so the result and the error text are always gojq's.
type JQ struct {
	code  *gojq.Code
	fast  fastFn // nil: outside the subset
	nvars int    // variable slots fast needs
}

// CompileJQ parses and compiles a jq expression, and its plain-Go
// evaluator when the expression is within the subset.
func CompileJQ(expr string) (*JQ, error) {
	q, err := gojq.Parse(expr)
	if err != nil {
		return nil, err
	}
	// The plain-Go compiler only reads the tree and keeps no part of it;
	// gojq's may rewrite it, so it comes second.
	var c fastCompiler
	out := &JQ{fast: c.query(q), nvars: c.nvars}
	if out.code, err = gojq.Compile(q); err != nil {
		return nil, err
	}
	return out, nil
}

// First is the expression's first output over in as gojq's iterator gives
// it (an error value when the run failed; ok false: no output): in plain
// Go where Fast answers, else in gojq, cut off after timeout (0: ctx's
// own deadline only).
func (q *JQ) First(ctx context.Context, in any, timeout time.Duration) (v any, ok bool) {
	if v, ok := q.Fast(in); ok {
		return v, true
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return q.code.RunWithContext(doneCtx{Context: ctx, done: ctx.Done()}, in).Next()
}

// doneCtx answers Done from a field: gojq checks Done before every
// instruction, and a cancelCtx's Done is an atomic load and a type
// assertion each time.
type doneCtx struct {
	context.Context
	done <-chan struct{}
}

func (c doneCtx) Done() <-chan struct{} { return c.done }

// Code is the gojq program, for callers that need every output (First
// gives the first).
func (q *JQ) Code() *gojq.Code { return q.code }

// Fast evaluates the expression in plain Go. ok is false when the
// expression or this input is outside the subset: run Code then. When ok,
// v is what gojq's first output would be.
func (q *JQ) Fast(in any) (v any, ok bool) {
	if q.fast == nil {
		return nil, false
	}
	var vars []any
	if q.nvars > 0 {
		vars = make([]any, q.nvars)
	}
	return q.fast(in, vars)
}

// HasFast reports whether the expression is within the plain-Go subset.
func (q *JQ) HasFast() bool { return q.fast != nil }

// fastFn evaluates one node: dot is jq's ".", vars the bound variables.
// ok false means "ask gojq" (outside the subset, an error, or no output).
type fastFn func(dot any, vars []any) (v any, ok bool)

// fastCompiler turns a gojq syntax tree into fastFns; a nil fastFn means
// the node is outside the subset.
type fastCompiler struct {
	scope []fastVar // bound variables, innermost last
	nvars int
}

type fastVar struct {
	name string
	slot int
}

func (c *fastCompiler) query(q *gojq.Query) fastFn {
	if q == nil || q.Meta != nil || len(q.Imports) > 0 || len(q.FuncDefs) > 0 {
		return nil
	}
	if q.Term != nil {
		return c.term(q.Term)
	}
	if q.Left == nil || q.Right == nil {
		return nil
	}
	l := c.query(q.Left)
	if l == nil {
		return nil
	}
	if len(q.Patterns) > 0 {
		return c.bind(q, l)
	}
	r := c.query(q.Right)
	if r == nil {
		return nil
	}
	switch q.Op {
	case gojq.OpPipe:
		return func(dot any, vars []any) (any, bool) {
			v, ok := l(dot, vars)
			if !ok {
				return nil, false
			}
			return r(v, vars)
		}
	case gojq.OpAlt:
		return func(dot any, vars []any) (any, bool) {
			v, ok := l(dot, vars)
			if !ok {
				return nil, false
			}
			if truthy(v) {
				return v, true
			}
			return r(dot, vars)
		}
	case gojq.OpAnd, gojq.OpOr:
		and := q.Op == gojq.OpAnd
		return func(dot any, vars []any) (any, bool) {
			v, ok := l(dot, vars)
			if !ok {
				return nil, false
			}
			if truthy(v) != and { // false and _, true or _
				return !and, true
			}
			if v, ok = r(dot, vars); !ok {
				return nil, false
			}
			return truthy(v), true
		}
	case gojq.OpAdd:
		return binary(l, r, add)
	case gojq.OpEq, gojq.OpNe:
		ne := q.Op == gojq.OpNe
		return binary(l, r, func(a, b any) (any, bool) {
			eq, ok := equal(a, b)
			return eq != ne, ok
		})
	}
	return nil
}

// bind compiles `left as $name | right`; destructuring is left to gojq.
func (c *fastCompiler) bind(q *gojq.Query, l fastFn) fastFn {
	if q.Op != gojq.OpPipe || len(q.Patterns) != 1 || !isVar(q.Patterns[0].Name) {
		return nil
	}
	slot := c.nvars
	c.nvars++
	c.scope = append(c.scope, fastVar{name: q.Patterns[0].Name, slot: slot})
	r := c.query(q.Right)
	c.scope = c.scope[:len(c.scope)-1]
	if r == nil {
		return nil
	}
	return func(dot any, vars []any) (any, bool) {
		v, ok := l(dot, vars)
		if !ok {
			return nil, false
		}
		vars[slot] = v
		return r(dot, vars) // the body sees the same "."
	}
}

func binary(l, r fastFn, op func(a, b any) (any, bool)) fastFn {
	return func(dot any, vars []any) (any, bool) {
		a, ok := l(dot, vars)
		if !ok {
			return nil, false
		}
		b, ok := r(dot, vars)
		if !ok {
			return nil, false
		}
		return op(a, b)
	}
}

func (c *fastCompiler) term(t *gojq.Term) fastFn {
	f := c.termBase(t)
	for _, s := range t.SuffixList {
		if f == nil || s.Index == nil || s.Iter || s.Optional {
			return nil
		}
		name, ok := constIndex(s.Index)
		if !ok {
			return nil
		}
		f = indexAfter(f, name)
	}
	return f
}

func (c *fastCompiler) termBase(t *gojq.Term) fastFn {
	switch t.Type {
	case gojq.TermTypeIdentity:
		return func(dot any, _ []any) (any, bool) { return dot, true }
	case gojq.TermTypeNull:
		return constant(nil)
	case gojq.TermTypeTrue:
		return constant(true)
	case gojq.TermTypeFalse:
		return constant(false)
	case gojq.TermTypeNumber:
		// Integers only: gojq's own parsing decides what other literals are.
		for i := 0; i < len(t.Number); i++ {
			if t.Number[i] < '0' || t.Number[i] > '9' {
				return nil
			}
		}
		n, err := strconv.Atoi(t.Number)
		if err != nil || n > 1<<53 {
			return nil
		}
		return constant(n)
	case gojq.TermTypeIndex:
		name, ok := constIndex(t.Index)
		if !ok {
			return nil
		}
		return func(dot any, _ []any) (any, bool) { return index(dot, name) }
	case gojq.TermTypeString:
		if t.Format != "" {
			return nil
		}
		return c.str(t.Str)
	case gojq.TermTypeQuery:
		return c.query(t.Query)
	case gojq.TermTypeFunc:
		return c.fn(t.Func)
	case gojq.TermTypeObject:
		return c.object(t.Object)
	case gojq.TermTypeArray:
		return c.array(t.Array)
	case gojq.TermTypeIf:
		return c.cond(t.If)
	}
	return nil
}

func constant(v any) fastFn {
	return func(any, []any) (any, bool) { return v, true }
}

// constIndex is the key of .name or ."name".
func constIndex(x *gojq.Index) (string, bool) {
	switch {
	case x == nil || x.IsSlice || x.Start != nil || x.End != nil:
		return "", false
	case x.Name != "":
		return x.Name, true
	case x.Str != nil && x.Str.Queries == nil:
		return x.Str.Str, true
	}
	return "", false
}

func indexAfter(f fastFn, name string) fastFn {
	return func(dot any, vars []any) (any, bool) {
		v, ok := f(dot, vars)
		if !ok {
			return nil, false
		}
		return index(v, name)
	}
}

// index is .name: null for null or a missing key; gojq's error otherwise.
func index(v any, name string) (any, bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case map[string]any:
		return x[name], true
	}
	return nil, false
}

// str is a string literal or an interpolation, whose parts are tostring'd.
func (c *fastCompiler) str(s *gojq.String) fastFn {
	if s == nil {
		return nil
	}
	if s.Queries == nil {
		return constant(s.Str)
	}
	parts := make([]fastFn, len(s.Queries))
	for i, q := range s.Queries {
		if q.Term != nil && q.Term.Type == gojq.TermTypeString && q.Term.Str != nil && q.Term.Str.Queries == nil {
			parts[i] = constant(q.Term.Str.Str)
			continue
		}
		f := c.query(q)
		if f == nil {
			return nil
		}
		parts[i] = f
	}
	return func(dot any, vars []any) (any, bool) {
		b := make([]byte, 0, 64)
		for _, p := range parts {
			v, ok := p(dot, vars)
			if !ok {
				return nil, false
			}
			s, ok := toString(v)
			if !ok {
				return nil, false
			}
			b = append(b, s...)
		}
		return string(b), true
	}
}

// isVar is a variable name the subset binds ($__loc__ is gojq's).
func isVar(name string) bool {
	return len(name) > 1 && name[0] == '$' && name != "$__loc__" && name != "$ENV"
}
