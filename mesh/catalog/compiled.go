package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/redact"
)

// ErrUnknownType means the envelope names a type the catalog does not have.
// The caller rejects the event (HTTP 400) or parks it (lane).
var ErrUnknownType = errors.New("unknown event type")

// Catalog is the compiled set of types.
type Catalog struct {
	types map[string]*CompiledType
}

// CompiledType is a type with its schema and key expression compiled.
type CompiledType struct {
	Name   string
	Def    Type
	schema *jsonschema.Schema
	key    *JQ
}

// Compile loads and compiles every type's schema (from schemas) and key
// expression. Errors name the config key or the schema file.
func Compile(cfg Config, schemas fs.FS) (*Catalog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Catalog{types: map[string]*CompiledType{}}
	comp := jsonschema.NewCompiler()
	comp.AssertFormat()
	var errs []error
	for _, name := range cfg.Names() {
		def := cfg.Types[name].WithDefaults(name)
		ct := &CompiledType{Name: name, Def: def}
		b, err := fs.ReadFile(schemas, def.Schema)
		if err != nil {
			errs = append(errs, fmt.Errorf("catalog.types.%s.schema: %w", name, err))
			continue
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			errs = append(errs, fmt.Errorf("catalog.types.%s.schema: %s: %w", name, def.Schema, err))
			continue
		}
		url := "sluice:///" + def.Schema
		if err := comp.AddResource(url, doc); err != nil {
			errs = append(errs, fmt.Errorf("catalog.types.%s.schema: %w", name, err))
			continue
		}
		if ct.schema, err = comp.Compile(url); err != nil {
			errs = append(errs, fmt.Errorf("catalog.types.%s.schema: %s: %w", name, def.Schema, err))
			continue
		}
		if def.Key != "" {
			if ct.key, err = CompileJQ(def.Key); err != nil {
				errs = append(errs, fmt.Errorf("catalog.types.%s.key: %w", name, err))
				continue
			}
		}
		if err := checkJQ(name, def); err != nil {
			errs = append(errs, err)
			continue
		}
		c.types[name] = ct
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// checkJQ compiles every other jq expression of a type (the services
// compile them again for use), so a config check finds a broken mapping
// before an event does.
func checkJQ(name string, def Type) error {
	var errs []error
	check := func(key, expr string) {
		if expr == "" {
			return
		}
		if _, err := CompileJQ(expr); err != nil {
			errs = append(errs, fmt.Errorf("catalog.types.%s.%s: %w", name, key, err))
		}
	}
	check("body", def.Body)
	check("crm.id_from", def.CRM.IDFrom)
	check("crm.id_key", def.CRM.IDKey)
	check("crm.conflict_id_from", def.CRM.ConflictIDFrom)
	if f := def.CRM.Find; f != nil {
		check("crm.find.path", f.Path)
		check("crm.find.body", f.Body)
		check("crm.find.id_from", f.IDFrom)
	}
	for i, l := range def.Lookups {
		check(fmt.Sprintf("lookups[%d].from", i), l.From)
	}
	return errors.Join(errs...)
}

// Type returns the compiled type name.
func (c *Catalog) Type(name string) (*CompiledType, bool) {
	t, ok := c.types[name]
	return t, ok
}

// Names returns the type names, sorted.
func (c *Catalog) Names() []string {
	out := make([]string, 0, len(c.types))
	for n := range c.types {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Prepare derives the key when the type says how and the envelope has none,
// then checks the envelope and validates its data against the type's schema.
// It returns *envelope.Invalid listing every field problem, or an error
// wrapping ErrUnknownType.
func (c *Catalog) Prepare(e *envelope.Envelope) error {
	return c.PrepareContext(context.Background(), e)
}

// PrepareContext is Prepare with the key expression bounded by ctx (and by
// KeyTimeout at most): a runaway expression is cut off and reported as a
// key problem.
func (c *Catalog) PrepareContext(ctx context.Context, e *envelope.Envelope) error {
	_, err := c.prepare(ctx, e)
	return err
}

// PrepareJQ is Prepare that also returns the envelope as gojq input (see
// AsJQ), built from the data the schema check already decoded.
func (c *Catalog) PrepareJQ(e *envelope.Envelope) (any, error) {
	return c.PrepareJQContext(context.Background(), e)
}

// PrepareJQContext is PrepareJQ with the key expression bounded by ctx (and
// by KeyTimeout at most).
func (c *Catalog) PrepareJQContext(ctx context.Context, e *envelope.Envelope) (any, error) {
	data, err := c.prepare(ctx, e)
	if err != nil {
		return nil, err
	}
	return jqInput(e, data), nil
}

// typeList names the catalog's types for an error text, at most 10.
func (c *Catalog) typeList() string {
	names := make([]string, 0, len(c.types))
	for n := range c.types {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) > 10 {
		names = append(names[:10], "…")
	}
	return strings.Join(names, ", ")
}

// prepare does Prepare's work and returns the decoded data (json.Number
// for numbers), or nil when the data was not checked.
func (c *Catalog) prepare(ctx context.Context, e *envelope.Envelope) (any, error) {
	t, ok := c.types[e.Type]
	if !ok {
		err := e.Check()
		if e.Type == "" || !envelope.ValidType(e.Type) {
			return nil, err // "type: required" or malformed, among the others
		}
		// The unknown type is the real problem and is reported first; a
		// missing key is not one (an unknown type cannot derive it).
		fields := []envelope.FieldError{{Field: "type", Reason: fmt.Sprintf("unknown event type %q (known: %s)", e.Type, c.typeList())}}
		var inv *envelope.Invalid
		if errors.As(err, &inv) {
			for _, f := range inv.Fields {
				if f.Field != "key" || e.Key != "" {
					fields = append(fields, f)
				}
			}
		}
		return nil, &envelope.Invalid{Fields: fields}
	}
	// The data is checked first so a key expression never runs over data
	// that lacks the fields it reads (it would derive "customer:null").
	var fields []envelope.FieldError
	var data any
	d := bytes.TrimSpace(e.Data)
	if len(d) > 0 && d[0] == '{' {
		var fs []envelope.FieldError
		data, fs = t.validateData(e.Data)
		fields = append(fields, fs...)
	}
	if len(fields) == 0 && e.Key == "" && t.key != nil && data != nil {
		k, err := t.deriveKey(ctx, jqInput(e, data))
		if err != nil {
			// jq errors preview the value they choked on: hide it.
			fields = append(fields, envelope.FieldError{Field: "key", Reason: redact.Default.Text(err.Error())})
		} else {
			e.Key = k
		}
	}
	if err := e.Check(); err != nil {
		var inv *envelope.Invalid
		if errors.As(err, &inv) {
			for _, f := range inv.Fields {
				// A key the type derives is missing only because the data
				// is invalid; the data errors say why.
				if f.Field == "key" && e.Key == "" && t.key != nil && len(fields) > 0 {
					continue
				}
				fields = append(fields, f)
			}
		}
	}
	if len(fields) > 0 {
		return nil, &envelope.Invalid{Fields: fields}
	}
	return data, nil
}

// IsUnknownType reports whether err is a Prepare error about the type.
func IsUnknownType(err error) bool {
	var inv *envelope.Invalid
	if errors.As(err, &inv) {
		for _, f := range inv.Fields {
			if f.Field == "type" && strings.HasPrefix(f.Reason, "unknown event type") {
				return true
			}
		}
	}
	return false
}

// DeriveKey runs the type's key expression over the envelope.
func (t *CompiledType) DeriveKey(e *envelope.Envelope) (string, error) {
	in, err := AsJQ(e)
	if err != nil {
		return "", err
	}
	return t.deriveKey(context.Background(), in)
}

// KeyTimeout bounds one run of a type's key expression, whatever the
// caller's context allows.
const KeyTimeout = 5 * time.Second

func (t *CompiledType) deriveKey(ctx context.Context, in any) (string, error) {
	v, ok := t.key.First(ctx, in, KeyTimeout)
	if !ok {
		return "", errors.New("key expression gave no value")
	}
	switch x := v.(type) {
	case error:
		return "", fmt.Errorf("key expression: %w", x)
	case string:
		return x, nil
	case int, float64:
		return fmt.Sprint(x), nil
	case nil:
		return "", errors.New("key expression gave null")
	}
	return "", fmt.Errorf("key expression gave a %T, want a string", v)
}

// AsJQ turns an envelope into the generic value gojq works on.
func AsJQ(e *envelope.Envelope) (any, error) {
	var data any
	dec := json.NewDecoder(bytes.NewReader(e.Data))
	dec.UseNumber() // ids above 2^53 keep every digit
	if err := dec.Decode(&data); err != nil {
		return nil, err
	}
	return jqInput(e, data), nil
}

// jqInput is the gojq value of e with its data already decoded.
func jqInput(e *envelope.Envelope, data any) map[string]any {
	return map[string]any{"id": e.ID, "type": e.Type, "key": e.Key, "source": e.Source,
		"occurred_at": e.OccurredAt.Format("2006-01-02T15:04:05.999999999Z07:00"), "data": data}
}

var printer = message.NewPrinter(language.English)

// ValidateData checks data against the type's schema and returns one
// FieldError per problem, fields named "data.<path>".
func (t *CompiledType) ValidateData(data []byte) []envelope.FieldError {
	_, fs := t.validateData(data)
	return fs
}

// validateData is ValidateData that also returns the decoded value (nil
// when the data is not JSON).
func (t *CompiledType) validateData(data []byte) (any, []envelope.FieldError) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, []envelope.FieldError{{Field: "data", Reason: "not valid JSON: " + err.Error()}}
	}
	return v, SchemaErrors(t.schema.Validate(v), "data")
}

// SchemaErrors turns a JSON Schema validation error into one FieldError per
// problem, sorted, fields named "<root>.<path>" (a missing property names
// the property, an unknown one says "unknown field"). nil for no error.
func SchemaErrors(err error, root string) []envelope.FieldError {
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []envelope.FieldError{{Field: root, Reason: err.Error()}}
	}
	var out []envelope.FieldError
	leaves(ve, root, &out)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out
}

func leaves(ve *jsonschema.ValidationError, root string, out *[]envelope.FieldError) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			leaves(c, root, out)
		}
		return
	}
	path := root
	for _, tok := range ve.InstanceLocation {
		path += "." + tok
	}
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			*out = append(*out, envelope.FieldError{Field: path + "." + m, Reason: "required"})
		}
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			*out = append(*out, envelope.FieldError{Field: path + "." + p, Reason: "unknown field"})
		}
	default:
		*out = append(*out, envelope.FieldError{Field: path, Reason: reason(ve.ErrorKind)})
	}
}

// reason is the text of a schema violation. It names the rule but never
// the event's value: the reasons reach replies, logs, parked headers,
// `sluice trace` and the status page, and the value may be personal data
// (an e-mail that fails its format) or a secret. jsonschema's own texts
// quote the value for format, pattern and the numeric bounds; those are
// rewritten here, the others (type, length, counts) carry no value.
func reason(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Format:
		return "is not a valid " + k.Want
	case *kind.Pattern:
		return "does not match pattern " + strconv.Quote(k.Want)
	case *kind.Minimum:
		return "must be >= " + ratString(k.Want)
	case *kind.Maximum:
		return "must be <= " + ratString(k.Want)
	case *kind.ExclusiveMinimum:
		return "must be > " + ratString(k.Want)
	case *kind.ExclusiveMaximum:
		return "must be < " + ratString(k.Want)
	case *kind.MultipleOf:
		return "must be a multiple of " + ratString(k.Want)
	case *kind.PropertyNames:
		return "has a property name that does not match propertyNames"
	case *kind.ContentEncoding:
		return "is not " + strconv.Quote(k.Want) + " encoded"
	case *kind.ContentMediaType:
		return "is not of media type " + strconv.Quote(k.Want)
	case *kind.InvalidJsonValue:
		return "is not a JSON value"
	}
	return k.LocalizedString(printer)
}

// ratString prints a schema bound as a decimal (1, 0.5), or a fraction
// when it has no short decimal form.
func ratString(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	if f, exact := r.Float64(); exact {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return r.RatString()
}
