package enricher

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"sluice.dev/mesh/productdb"
)

// fetch returns the lookup's row for key as a column → value object,
// from the cache or the database. found is false when no row has the key;
// err is a database error (worth retrying unless productdb.IsDataError).
func (s *Service) fetch(ctx context.Context, lk *lookup, key any) (row map[string]any, found bool, err error) {
	ck := lk.cache + keyType(key) + productdb.KeyString(key)
	if s.cache != nil {
		if r, ok := s.cache.Get(ck); ok {
			s.hits.Add(1)
			return r, true, nil
		}
	}
	s.misses.Add(1)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	row, err = queryRow(ctx, s.deps.DB, lk.query, key)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if s.cache != nil {
		s.cache.Add(ck, row)
	}
	return row, true, nil
}

// keyType is the cache key's type prefix: "<Go type>:".
func keyType(key any) string {
	switch key.(type) {
	case string:
		return "string:"
	case int64:
		return "int64:"
	case float64:
		return "float64:"
	}
	return fmt.Sprintf("%T:", key)
}

// queryRow runs query with one parameter and converts the first row with
// productdb.JSONValue. It returns sql.ErrNoRows when there is none.
func queryRow(ctx context.Context, db *sql.DB, query string, key any) (map[string]any, error) {
	rows, err := db.QueryContext(ctx, query, key)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, sql.ErrNoRows
	}
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	vals := make([]any, len(types))
	ptrs := make([]any, len(types))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	row := make(map[string]any, len(types))
	for i, t := range types {
		row[t.Name()] = productdb.JSONValue(vals[i], t.DatabaseTypeName())
	}
	return row, rows.Close()
}
