package enricher

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/productdb"
)

// mapping is one catalog type compiled for the enricher.
type mapping struct {
	name    string
	target  catalog.Target
	lookups []*lookup
	body    *catalog.JQ // nil: the event's data as is
	idKey   *catalog.JQ // nil: the event's key
	find    *findCode   // nil: no crm.find
}

// findCode is a type's crm.find with its jq compiled.
type findCode struct {
	path, body *catalog.JQ // body nil: no body
}

// lookup is one compiled catalog lookup.
type lookup struct {
	def   catalog.Lookup
	key   string // config key, e.g. catalog.types.order.lookups[0]
	from  *catalog.JQ
	query string // SELECT cols FROM table WHERE key_column = $1
	check string // the same query AND 1=0, run at start
	cache string // cache key prefix: table, key column and columns
}

// compile compiles every jq expression of every type and builds the lookup
// queries. Errors name the catalog key.
func compile(cat *catalog.Catalog, d productdb.Dialect) (map[string]*mapping, error) {
	out := map[string]*mapping{}
	var errs []error
	for _, name := range cat.Names() {
		ct, _ := cat.Type(name)
		k := "catalog.types." + name
		mp := &mapping{name: name, target: ct.Def.CRM}
		for i, l := range ct.Def.Lookups {
			lk := &lookup{def: l, key: fmt.Sprintf("%s.lookups[%d]", k, i)}
			idents := append([]string{l.Table, l.KeyColumn}, l.Columns...)
			for _, id := range idents {
				if !catalog.ValidIdent(id) {
					errs = append(errs, fmt.Errorf("%s: %q is not an allowed SQL identifier", lk.key, id))
				}
			}
			code, err := catalog.CompileJQ(l.From)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.from: %w", lk.key, err))
			}
			lk.from = code
			lk.query = d.SelectByKey(l.Table, l.KeyColumn, l.Columns)
			lk.check = lk.query + " AND 1=0"
			lk.cache = l.Table + "\x00" + l.KeyColumn + "\x00" + strings.Join(l.Columns, ",") + "\x00"
			mp.lookups = append(mp.lookups, lk)
		}
		if strings.TrimSpace(ct.Def.Body) != "" {
			code, err := catalog.CompileJQ(ct.Def.Body)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.body: %w", k, err))
			}
			mp.body = code
		}
		if strings.TrimSpace(ct.Def.CRM.IDKey) != "" {
			code, err := catalog.CompileJQ(ct.Def.CRM.IDKey)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.crm.id_key: %w", k, err))
			}
			mp.idKey = code
		}
		if f := ct.Def.CRM.Find; f != nil {
			mp.find = &findCode{}
			var err error
			if mp.find.path, err = catalog.CompileJQ(f.Path); err != nil {
				errs = append(errs, fmt.Errorf("%s.crm.find.path: %w", k, err))
			}
			if strings.TrimSpace(f.Body) != "" {
				if mp.find.body, err = catalog.CompileJQ(f.Body); err != nil {
					errs = append(errs, fmt.Errorf("%s.crm.find.body: %w", k, err))
				}
			}
		}
		out[name] = mp
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// checkTables runs every lookup's query with AND 1=0, so a missing table
// or column fails now, naming the catalog key, instead of holding a lane
// later.
func checkTables(ctx context.Context, db *sql.DB, types map[string]*mapping, names []string) error {
	var errs []error
	for _, name := range names {
		for _, lk := range types[name].lookups {
			rows, err := db.QueryContext(ctx, lk.check, nil)
			if err == nil {
				for rows.Next() {
				}
				err = errors.Join(rows.Err(), rows.Close())
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: %s: table %q with key column %q and columns %s: %w",
					ErrLookupCheck, lk.key, lk.def.Table, lk.def.KeyColumn, strings.Join(lk.def.Columns, ", "), err))
			}
		}
	}
	return errors.Join(errs...)
}
