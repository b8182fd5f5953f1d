// Package catalog holds the user's event types: for each type its JSON
// Schema, how its ordering key is derived, its data-mart lookups and its CRM
// mapping. Types are configuration, not code: adding one is a schema file and
// a config entry, no rebuild.
package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"sort"
)

// Config lists the event types and where their schemas are.
type Config struct {
	// SchemasDir holds <type>.json JSON Schemas (draft 2020-12 by default)
	// for each type's data. Empty: the schemas embedded in the binary (the
	// sample marketplace).
	SchemasDir string `yaml:"schemas_dir"`
	// Types maps a type name to its definition. Empty: the embedded sample
	// marketplace types.
	Types map[string]Type `yaml:"types"`
	// IncludeSample adds the embedded sample marketplace types to Types (a
	// type of Types with a sample type's name replaces it), so one own type
	// can be tried next to the demo. Off: Types alone (production).
	IncludeSample bool `yaml:"include_sample"`
}

// Type is one event type.
type Type struct {
	// Schema is the schema file name in SchemasDir. Default "<type>.json".
	Schema string `yaml:"schema"`
	// Key is a jq expression over the envelope that derives the ordering key
	// when the producer sent none, e.g. `"lead:" + (.data.lead_id|tostring)`.
	// Empty: the producer must send "key".
	Key string `yaml:"key"`
	// Lookups are the data-mart fetches the enricher does before mapping.
	Lookups []Lookup `yaml:"lookups"`
	// Body is a jq expression building the CRM request body. Its input is
	// {"event": <envelope>, "lookups": {<name>: <row or null>}}.
	// Empty: the event's data is sent as is.
	Body string `yaml:"body"`
	// CRM says where and how the body is sent.
	CRM Target `yaml:"crm"`
}

// Lookup fetches selected columns of one row the event references.
type Lookup struct {
	// Name is the key of the row in the jq input's "lookups" object.
	Name string `yaml:"name"`
	// Table, KeyColumn and Columns are SQL identifiers ([A-Za-z_][A-Za-z0-9_]*),
	// checked at start; values only ever travel as query parameters.
	Table     string   `yaml:"table"`
	KeyColumn string   `yaml:"key_column"`
	Columns   []string `yaml:"columns"`
	// From is a jq expression over the envelope giving the foreign key value.
	From string `yaml:"from"`
	// Optional: a null foreign key or a missing row gives null instead of
	// waiting for the row and parking.
	Optional bool `yaml:"optional"`
}

// Modes of a CRM target.
const (
	ModeSend   = "send"   // one request as configured (Method, Path)
	ModeCreate = "create" // create, remember the returned CRM id
	ModeUpdate = "update" // update by the remembered CRM id (parked when none is known)
	ModeUpsert = "upsert" // create when no id is known for the key, update otherwise
)

// Target is the CRM request of a type.
type Target struct {
	// Object names the CRM object (contacts, deals…); the id map is per object.
	Object string `yaml:"object"`
	// Mode is send, create, update or upsert. Default send.
	Mode string `yaml:"mode"`
	// Method and Path of a send or create request. Default POST.
	Method string `yaml:"method"`
	Path   string `yaml:"path"`
	// UpdateMethod and UpdatePath of an update; "{crm_id}" in the path is
	// replaced by the remembered id. Default PATCH.
	UpdateMethod string `yaml:"update_method"`
	UpdatePath   string `yaml:"update_path"`
	// IDFrom is a jq expression over a create response body giving the CRM
	// record id. Default ".id".
	IDFrom string `yaml:"id_from"`
	// IDKey is a jq expression over the envelope naming the entity whose CRM
	// id is remembered and looked up, e.g. `"lead:\(.data.lead_id)"` when
	// lead events are ordered by customer. Default: the event's key.
	IDKey string `yaml:"id_key"`
	// Find, when set, looks the record up at the CRM before a create is
	// sent again after an uncertain attempt (timeout, connection error,
	// 5xx, 409: the CRM may have created it and the answer was lost), and
	// optionally before every create when no id is known. A found id is
	// adopted into the id map. Modes create and upsert only.
	Find *Find `yaml:"find"`
	// ConflictIDFrom is a jq expression over a 409 or 422 answer to a
	// create giving the id of the record the CRM's duplicate check found
	// (null or empty: none). The id is adopted and the event applied as
	// an update. Modes create and upsert only.
	ConflictIDFrom string `yaml:"conflict_id_from"`
}

// Find is a lookup request at the CRM. Path and Body are jq expressions
// over {event: <envelope>, lookups: {...}, body: <the mapped CRM body>};
// IDFrom is jq over the CRM's answer.
type Find struct {
	// Method is the HTTP method. Default GET.
	Method string `yaml:"method"`
	// Path is jq giving the path (with its query) appended to the CRM URL,
	// e.g. `"/api/deals?external_id=" + (.body.external_id|@uri)`. Required.
	Path string `yaml:"path"`
	// Body is jq giving a JSON request body (search APIs that take POST).
	// Empty: no body.
	Body string `yaml:"body"`
	// IDFrom is jq over the answer giving the record id, or null/empty
	// when nothing was found, e.g. `.data[0].id // empty`. Required.
	IDFrom string `yaml:"id_from"`
	// BeforeCreate also runs the lookup before the first attempt of every
	// create when no id is known (records that may exist already, made by
	// someone else). Default false: only after an uncertain attempt.
	BeforeCreate bool `yaml:"before_create"`
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// ValidIdent reports whether s is an allowed SQL identifier.
func ValidIdent(s string) bool { return identRe.MatchString(s) }

// WithDefaults fills per-type defaults.
func (t Type) WithDefaults(name string) Type {
	if t.Schema == "" {
		t.Schema = name + ".json"
	}
	if t.CRM.Mode == "" {
		t.CRM.Mode = ModeSend
	}
	if t.CRM.Method == "" {
		t.CRM.Method = "POST"
	}
	if t.CRM.UpdateMethod == "" {
		t.CRM.UpdateMethod = "PATCH"
	}
	if t.CRM.IDFrom == "" {
		t.CRM.IDFrom = ".id"
	}
	if t.CRM.Find != nil && t.CRM.Find.Method == "" {
		f := *t.CRM.Find
		f.Method = "GET"
		t.CRM.Find = &f
	}
	return t
}

// Validate checks the static parts of a type definition, naming the key.
func (t Type) Validate(name string) error {
	k := "catalog.types." + name
	var errs []error
	if !typeRe.MatchString(name) {
		errs = append(errs, fmt.Errorf("%s: type names are 1-64 characters of A-Z a-z 0-9 _ -", k))
	}
	seen := map[string]bool{}
	for i, l := range t.Lookups {
		lk := fmt.Sprintf("%s.lookups[%d]", k, i)
		if l.Name == "" || seen[l.Name] {
			errs = append(errs, fmt.Errorf("%s.name: required and unique", lk))
		}
		seen[l.Name] = true
		if !ValidIdent(l.Table) {
			errs = append(errs, fmt.Errorf("%s.table: %q is not an allowed identifier", lk, l.Table))
		}
		if !ValidIdent(l.KeyColumn) {
			errs = append(errs, fmt.Errorf("%s.key_column: %q is not an allowed identifier", lk, l.KeyColumn))
		}
		if len(l.Columns) == 0 {
			errs = append(errs, fmt.Errorf("%s.columns: at least one column", lk))
		}
		for _, c := range l.Columns {
			if !ValidIdent(c) {
				errs = append(errs, fmt.Errorf("%s.columns: %q is not an allowed identifier", lk, c))
			}
		}
		if l.From == "" {
			errs = append(errs, fmt.Errorf("%s.from: required (jq expression giving the key value)", lk))
		}
	}
	switch t.CRM.Mode {
	case ModeSend, ModeCreate:
		if t.CRM.Path == "" {
			errs = append(errs, fmt.Errorf("%s.crm.path: required for mode %s", k, t.CRM.Mode))
		}
	case ModeUpdate, ModeUpsert:
		if t.CRM.UpdatePath == "" {
			errs = append(errs, fmt.Errorf("%s.crm.update_path: required for mode %s", k, t.CRM.Mode))
		}
		if t.CRM.Mode == ModeUpsert && t.CRM.Path == "" {
			errs = append(errs, fmt.Errorf("%s.crm.path: required for mode upsert", k))
		}
	default:
		errs = append(errs, fmt.Errorf("%s.crm.mode: %q is not send, create, update or upsert", k, t.CRM.Mode))
	}
	if t.CRM.Mode != ModeSend && t.CRM.Object == "" {
		errs = append(errs, fmt.Errorf("%s.crm.object: required for mode %s", k, t.CRM.Mode))
	}
	if t.CRM.Object != "" && !objectRe.MatchString(t.CRM.Object) {
		errs = append(errs, fmt.Errorf("%s.crm.object: %q must be dot-separated words of A-Z a-z 0-9 _ -", k, t.CRM.Object))
	}
	if f := t.CRM.Find; f != nil {
		if t.CRM.Mode != ModeCreate && t.CRM.Mode != ModeUpsert {
			errs = append(errs, fmt.Errorf("%s.crm.find: only for modes create and upsert", k))
		}
		if f.Path == "" {
			errs = append(errs, fmt.Errorf("%s.crm.find.path: required (jq giving the lookup path)", k))
		}
		if f.IDFrom == "" {
			errs = append(errs, fmt.Errorf("%s.crm.find.id_from: required (jq giving the found id or null)", k))
		}
		switch f.Method {
		case "GET", "POST":
		default:
			errs = append(errs, fmt.Errorf("%s.crm.find.method: %q is not GET or POST", k, f.Method))
		}
	}
	if t.CRM.ConflictIDFrom != "" && t.CRM.Mode != ModeCreate && t.CRM.Mode != ModeUpsert {
		errs = append(errs, fmt.Errorf("%s.crm.conflict_id_from: only for modes create and upsert", k))
	}
	for key, m := range map[string]string{"method": t.CRM.Method, "update_method": t.CRM.UpdateMethod} {
		switch m {
		case "POST", "PUT", "PATCH", "DELETE", "GET":
		default:
			errs = append(errs, fmt.Errorf("%s.crm.%s: %q is not POST, PUT, PATCH, DELETE or GET", k, key, m))
		}
	}
	return errors.Join(errs...)
}

var (
	typeRe   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	objectRe = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// Validate checks every type.
func (c Config) Validate() error {
	if len(c.Types) == 0 {
		return errors.New("catalog.types: no event types configured")
	}
	var errs []error
	for _, name := range c.Names() {
		errs = append(errs, c.Types[name].WithDefaults(name).Validate(name))
	}
	return errors.Join(errs...)
}

// Names returns the type names, sorted.
func (c Config) Names() []string {
	out := make([]string, 0, len(c.Types))
	for n := range c.Types {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// SchemaFS returns the file system schemas are read from: SchemasDir when
// set, else fallback.
func (c Config) SchemaFS(fallback fs.FS) fs.FS {
	if c.SchemasDir != "" {
		return os.DirFS(c.SchemasDir)
	}
	return fallback
}
