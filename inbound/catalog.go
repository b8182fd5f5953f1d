package inbound

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"sort"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"sluice.dev/mesh/catalog"
	"sluice.dev/schemas"
)

// Catalog is the set of webhook types (the YAML of inbound.catalog_file:
// a "types:" map).
type Catalog struct {
	Types map[string]Type `yaml:"types"`
}

// Type is one webhook type: how it is validated and written. Every jq
// expression sees the webhook item as the CRM sent it.
type Type struct {
	// Schema is the JSON Schema file (in schemas_dir) the whole item must
	// satisfy. Default "<type>.json".
	Schema string `yaml:"schema"`
	// Key is a jq expression giving the entity key ("lead:42"). Items of
	// one key are written in order; the stale guard is per key and table.
	// It may be left empty when every source's envelope maps the key; an
	// item without a key is parked.
	Key string `yaml:"key"`
	// Version is a jq expression giving the item's version of the entity:
	// a number (revision) or an RFC 3339 time (updated_at). An item older
	// than the version already applied is skipped. A source envelope's
	// version, when it maps one, wins. Empty: no stale guard.
	Version string `yaml:"version"`
	// VersionPolicy says what an item without a version (null or absent)
	// gets: "optional" (default) applies it in stream order with the
	// stale guard off for that item (the entity's stored version is kept
	// for later versioned items); "require" parks it.
	VersionPolicy string `yaml:"version_policy"`
	// OnInvalid is what an item that cannot be applied (schema, checks,
	// mapping, a missing update row, values the database refuses) does to
	// its entity: "skip" (default) parks the item and the entity's later
	// items go on; "isolate" parks the entity's later items behind it, in
	// order, until an operator replays or discards the key (like
	// outbound).
	OnInvalid string `yaml:"on_invalid"`
	// Origin is a jq expression that is true (or a non-empty string) when
	// the item echoes a change Sluice itself made in the CRM, e.g.
	// `.actor.name == "sluice"` or `.meta.idempotency_key != null`. Such
	// items are recorded as "echo" and not written. Empty: no marker.
	Origin string `yaml:"origin"`
	// ApplyUnchanged writes an item even when its mapped values equal the
	// ones last applied for the entity. Default false: skipped as
	// "unchanged", which ends a ping-pong after one round.
	ApplyUnchanged bool `yaml:"apply_unchanged"`
	// Checks are semantic checks run after the schema.
	Checks []Check `yaml:"checks"`
	// Write maps the item to a table row.
	Write Write `yaml:"write"`
}

// Check is one semantic check on a value of the item.
type Check struct {
	// Name identifies the check in park reasons.
	Name string `yaml:"name"`
	// Value is a jq expression giving the checked value.
	Value string `yaml:"value"`
	// Enum, when set, lists the allowed values.
	Enum []any `yaml:"enum"`
	// Exists, when set, requires a row whose Column equals the value
	// (a parameterized SELECT).
	Exists *Ref `yaml:"exists"`
	// Optional lets a null value pass.
	Optional bool `yaml:"optional"`
}

// Ref names a table column a value must exist in.
type Ref struct {
	Table  string `yaml:"table"`
	Column string `yaml:"column"`
}

// Write modes.
const (
	ModeUpsert = "upsert" // insert, or update the non-key columns on conflict
	ModeInsert = "insert" // insert; an existing key is left alone
	ModeUpdate = "update" // update the row with the key; a missing row parks
)

// Write is a type's table mapping. Table and column names are SQL
// identifiers checked at start (never from the webhook); values travel
// only as query parameters.
type Write struct {
	Table string `yaml:"table"`
	// Mode is upsert (default), insert or update.
	Mode string `yaml:"mode"`
	// Key lists the key columns (the conflict target, the UPDATE's WHERE);
	// each must be in Columns.
	Key []string `yaml:"key"`
	// Columns maps a column to the jq expression of its value. Objects and
	// arrays are stored as JSON text.
	Columns map[string]string `yaml:"columns"`
	// SkipAbsent gives the columns patch semantics: a column whose value
	// is absent from the item (its expression is a path such as
	// .data.status and the item has no such member, or the expression
	// gives no output) is left out of the write, so a stored value is
	// never overwritten by a field the CRM did not send. An explicit null
	// is still written. Key columns must be present. Default false: an
	// absent field is written as NULL.
	SkipAbsent bool `yaml:"skip_absent"`
}

// Version policies and invalid-item choices.
const (
	VersionOptional  = "optional"
	VersionRequire   = "require"
	OnInvalidSkip    = "skip"
	OnInvalidIsolate = "isolate"
)

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

func validIdent(s string) bool { return identRe.MatchString(s) }

// LoadCatalog returns the configured webhook types and the file system
// their schemas are read from: inline types, else catalog_file, else the
// embedded sample; schemas_dir, else the embedded sample schemas.
func LoadCatalog(cfg Config) (Catalog, fs.FS, error) {
	var fsys fs.FS = schemas.Inbound()
	if cfg.SchemasDir != "" {
		fsys = os.DirFS(cfg.SchemasDir)
	}
	if len(cfg.Types) > 0 {
		return Catalog{Types: cfg.Types}, fsys, nil
	}
	raw := schemas.InboundCatalog()
	if cfg.CatalogFile != "" {
		b, err := os.ReadFile(cfg.CatalogFile)
		if err != nil {
			return Catalog{}, nil, fmt.Errorf("inbound.catalog_file: %w", err)
		}
		raw = b
	}
	var c Catalog
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return Catalog{}, nil, fmt.Errorf("inbound.catalog_file: %w", err)
	}
	return c, fsys, nil
}

// compiledType is a Type with its schema and expressions compiled.
type compiledType struct {
	name    string
	def     Type
	schema  *jsonschema.Schema
	key     *catalog.JQ
	version *catalog.JQ
	origin  *catalog.JQ
	checks  []compiledCheck
	cols    []string // sorted
	colCode map[string]*catalog.JQ
	// colPath is path(<column expression>) for write.skip_absent.
	colPath map[string]*catalog.JQ
}

type compiledCheck struct {
	Check
	value *catalog.JQ
	enum  map[string]bool
}

// compileCatalog checks and compiles every type; errors name the key
// (inbound.types.<name>.<field>).
func compileCatalog(c Catalog, fsys fs.FS, reserved ...string) (map[string]*compiledType, error) {
	if len(c.Types) == 0 {
		return nil, errors.New("inbound.types: no webhook types configured")
	}
	comp := jsonschema.NewCompiler()
	comp.AssertFormat()
	var errs []error
	if err := addSchemas(comp, fsys, c); err != nil {
		errs = append(errs, err)
	}
	names := make([]string, 0, len(c.Types))
	for n := range c.Types {
		names = append(names, n)
	}
	sort.Strings(names)
	out := map[string]*compiledType{}
	for _, name := range names {
		ct, err := compileType(comp, name, c.Types[name], reserved)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[name] = ct
	}
	return out, errors.Join(errs...)
}

func compileType(comp *jsonschema.Compiler, name string, def Type, reserved []string) (*compiledType, error) {
	key := "inbound.types." + name
	if !typeRe.MatchString(name) {
		return nil, fmt.Errorf("%s: type name must match [A-Za-z0-9_-]{1,64}", key)
	}
	if def.Schema == "" {
		def.Schema = name + ".json"
	}
	if def.Write.Mode == "" {
		def.Write.Mode = ModeUpsert
	}
	if def.VersionPolicy == "" {
		def.VersionPolicy = VersionOptional
	}
	if def.OnInvalid == "" {
		def.OnInvalid = OnInvalidSkip
	}
	ct := &compiledType{name: name, def: def, colCode: map[string]*catalog.JQ{}, colPath: map[string]*catalog.JQ{}}
	var errs []error
	var err error
	if ct.schema, err = comp.Compile("sluice:///" + def.Schema); err != nil {
		errs = append(errs, fmt.Errorf("%s.schema: %w", key, err))
	}
	jq := func(field, expr string, required bool) *catalog.JQ {
		if expr == "" {
			if required {
				errs = append(errs, fmt.Errorf("%s.%s: required", key, field))
			}
			return nil
		}
		code, err := catalog.CompileJQ(expr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", key, field, err))
		}
		return code
	}
	ct.key = jq("key", def.Key, false)
	if def.VersionPolicy != VersionOptional && def.VersionPolicy != VersionRequire {
		errs = append(errs, fmt.Errorf("%s.version_policy: %q must be optional or require", key, def.VersionPolicy))
	}
	if def.OnInvalid != OnInvalidSkip && def.OnInvalid != OnInvalidIsolate {
		errs = append(errs, fmt.Errorf("%s.on_invalid: %q must be skip or isolate", key, def.OnInvalid))
	}
	ct.version = jq("version", def.Version, false)
	ct.origin = jq("origin", def.Origin, false)
	ident := func(field, s string) {
		if !validIdent(s) {
			errs = append(errs, fmt.Errorf("%s.%s: %q is not an identifier ([A-Za-z_][A-Za-z0-9_]*)", key, field, s))
		}
		for _, r := range reserved {
			if s == r {
				errs = append(errs, fmt.Errorf("%s.%s: %q is Sluice's own table", key, field, s))
			}
		}
	}
	for i, ch := range def.Checks {
		f := fmt.Sprintf("checks[%d]", i)
		cc := compiledCheck{Check: ch, value: jq(f+".value", ch.Value, true)}
		if ch.Name == "" {
			errs = append(errs, fmt.Errorf("%s.%s.name: required", key, f))
		}
		if len(ch.Enum) == 0 && ch.Exists == nil {
			errs = append(errs, fmt.Errorf("%s.%s: needs enum or exists", key, f))
		}
		if len(ch.Enum) > 0 {
			cc.enum = map[string]bool{}
			for _, v := range ch.Enum {
				cc.enum[canonical(v)] = true
			}
		}
		if ch.Exists != nil {
			ident(f+".exists.table", ch.Exists.Table)
			ident(f+".exists.column", ch.Exists.Column)
		}
		ct.checks = append(ct.checks, cc)
	}
	w := def.Write
	ident("write.table", w.Table)
	switch w.Mode {
	case ModeUpsert, ModeInsert, ModeUpdate:
	default:
		errs = append(errs, fmt.Errorf("%s.write.mode: %q must be upsert, insert or update", key, w.Mode))
	}
	if len(w.Columns) == 0 {
		errs = append(errs, fmt.Errorf("%s.write.columns: required", key))
	}
	for col, expr := range w.Columns {
		ident("write.columns."+col, col)
		ct.colCode[col] = jq("write.columns."+col, expr, true)
		ct.cols = append(ct.cols, col)
		if w.SkipAbsent && expr != "" {
			if p, err := catalog.CompileJQ("path(" + expr + ")"); err == nil {
				ct.colPath[col] = p
			}
		}
	}
	sort.Strings(ct.cols)
	if len(w.Key) == 0 {
		errs = append(errs, fmt.Errorf("%s.write.key: at least one key column is required", key))
	}
	if w.Mode == ModeUpdate && len(w.Columns) <= len(w.Key) {
		errs = append(errs, fmt.Errorf("%s.write.columns: update mode needs a column besides the key", key))
	}
	for _, k := range w.Key {
		if _, ok := w.Columns[k]; !ok {
			errs = append(errs, fmt.Errorf("%s.write.key: %q is not in write.columns", key, k))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ct, nil
}

// addSchemas adds every *.json file at the top of fsys, and every file a
// type names, as the resource sluice:///<name>, so schemas can $ref each
// other by file name (or by their $id). Nothing is fetched from the network.
func addSchemas(comp *jsonschema.Compiler, fsys fs.FS, c Catalog) error {
	files, err := fs.Glob(fsys, "*.json")
	if err != nil {
		return fmt.Errorf("inbound.schemas_dir: %w", err)
	}
	for name, t := range c.Types {
		if t.Schema == "" {
			t.Schema = name + ".json"
		}
		files = append(files, t.Schema)
	}
	sort.Strings(files)
	var errs []error
	added := map[string]bool{}
	for _, f := range files {
		if added[f] {
			continue
		}
		added[f] = true
		b, err := fs.ReadFile(fsys, f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the type's compile reports it under its key
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("inbound.schemas_dir: %w", err))
			continue
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			errs = append(errs, fmt.Errorf("inbound.schemas_dir: %s: %w", f, err))
			continue
		}
		if err := comp.AddResource("sluice:///"+f, doc); err != nil {
			errs = append(errs, fmt.Errorf("inbound.schemas_dir: %s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}
