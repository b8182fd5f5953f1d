package inbound

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"sluice.dev/mesh/productdb"
)

// Outcomes recorded in the applied table (and counted in Stats).
const (
	OutcomeApplied   = "applied"   // the row was written
	OutcomeStale     = "stale"     // older than the entity's applied version
	OutcomeEcho      = "echo"      // the origin marker says Sluice made this change
	OutcomeUnchanged = "unchanged" // same values as last applied for the entity
	OutcomeDuplicate = "duplicate" // this webhook id was settled before (not recorded again)
)

// store writes webhook items and the bookkeeping rows in one transaction.
type store struct {
	db       *sql.DB
	d        productdb.Dialect
	applied  string
	versions string
}

// work is one item ready to be written.
type work struct {
	webhookID  string
	typ        *compiledType
	entity     string
	version    string // "" when the type has no version
	origin     bool
	hash       string
	vals       map[string]any
	cols       []string // the columns written (sorted): all, or the present ones (write.skip_absent)
	receivedAt time.Time
}

func (s *store) q(ident string) string { return s.d.Quote(ident) }

func (s *store) ph(n int) string { return s.d.Placeholder(n) }

// ensure creates the applied-events and versions tables if needed. The
// column types are portable across SQLite, PostgreSQL and MySQL.
func (s *store) ensure(ctx context.Context) error {
	for _, ddl := range []string{
		"CREATE TABLE IF NOT EXISTS " + s.q(s.applied) + ` (
			webhook_id VARCHAR(300) NOT NULL PRIMARY KEY,
			type VARCHAR(64) NOT NULL,
			entity VARCHAR(255) NOT NULL,
			outcome VARCHAR(16) NOT NULL,
			received_at VARCHAR(40) NOT NULL,
			applied_at VARCHAR(40) NOT NULL)`,
		"CREATE TABLE IF NOT EXISTS " + s.q(s.versions) + ` (
			entity VARCHAR(255) NOT NULL,
			tbl VARCHAR(64) NOT NULL,
			version VARCHAR(100),
			content_hash VARCHAR(64) NOT NULL,
			updated_at VARCHAR(40) NOT NULL,
			PRIMARY KEY (entity, tbl))`,
	} {
		if _, err := s.db.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("inbound: create bookkeeping table: %w", err)
		}
	}
	return nil
}

// exists runs a referential check: is there a row of ref with value?
func (s *store) exists(ctx context.Context, ref Ref, value any) (bool, error) {
	t := s.q(ref.Table)
	query := "SELECT 1 FROM " + t + " WHERE " + t + "." + s.q(ref.Column) + " = " + s.ph(1) + " LIMIT 1"
	var one int
	err := s.db.QueryRowContext(ctx, query, value).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// apply settles one item in a single transaction: skip it if its webhook id
// was settled before; else decide applied/echo/stale/unchanged, write the
// row (applied only), advance the entity's version and hash (not for stale)
// and record the webhook id. A redelivery after a crash finds the id and
// does nothing.
func (s *store) apply(ctx context.Context, w *work) (string, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = tx.Rollback() }()
	var one int
	err = tx.QueryRowContext(ctx, "SELECT 1 FROM "+s.q(s.applied)+" WHERE webhook_id = "+s.ph(1), w.webhookID).Scan(&one)
	if err == nil {
		return OutcomeDuplicate, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", err
	}
	table := w.typ.def.Write.Table
	var oldVer sql.NullString
	var oldHash string
	found := true
	err = tx.QueryRowContext(ctx, "SELECT version, content_hash FROM "+s.q(s.versions)+
		" WHERE entity = "+s.ph(1)+" AND tbl = "+s.ph(2), w.entity, table).Scan(&oldVer, &oldHash)
	if errors.Is(err, sql.ErrNoRows) {
		found, err = false, nil
	}
	if err != nil {
		return "", err
	}
	outcome := OutcomeApplied
	switch {
	case w.origin:
		outcome = OutcomeEcho
	case found && w.version != "" && oldVer.Valid && compareVersions(w.version, oldVer.String) < 0:
		outcome = OutcomeStale
	case found && !w.typ.def.ApplyUnchanged && oldHash == w.hash:
		outcome = OutcomeUnchanged
	}
	if outcome == OutcomeApplied {
		if err := s.writeRow(ctx, tx, w); err != nil {
			return "", err
		}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if outcome != OutcomeStale {
		ver := oldVer
		if w.version != "" && (!oldVer.Valid || compareVersions(w.version, oldVer.String) >= 0) {
			ver = sql.NullString{String: w.version, Valid: true}
		}
		if found {
			_, err = tx.ExecContext(ctx, "UPDATE "+s.q(s.versions)+" SET version = "+s.ph(1)+", content_hash = "+s.ph(2)+
				", updated_at = "+s.ph(3)+" WHERE entity = "+s.ph(4)+" AND tbl = "+s.ph(5), ver, w.hash, now, w.entity, table)
		} else {
			_, err = tx.ExecContext(ctx, "INSERT INTO "+s.q(s.versions)+" (entity, tbl, version, content_hash, updated_at) VALUES ("+
				s.phs(1, 5)+")", w.entity, table, ver, w.hash, now)
		}
		if err != nil {
			return "", err
		}
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO "+s.q(s.applied)+" (webhook_id, type, entity, outcome, received_at, applied_at) VALUES ("+
		s.phs(1, 6)+")", w.webhookID, w.typ.name, w.entity, outcome, w.receivedAt.UTC().Format(time.RFC3339Nano), now)
	if err != nil {
		return "", err
	}
	return outcome, tx.Commit()
}

// phs is the placeholders from..to, comma separated.
func (s *store) phs(from, to int) string {
	p := make([]string, 0, to-from+1)
	for i := from; i <= to; i++ {
		p = append(p, s.ph(i))
	}
	return strings.Join(p, ", ")
}

func (s *store) writeRow(ctx context.Context, tx *sql.Tx, w *work) error {
	wr := w.typ.def.Write
	isKey := map[string]bool{}
	for _, k := range wr.Key {
		isKey[k] = true
	}
	t := s.q(wr.Table)
	var args []any
	if wr.Mode == ModeUpdate {
		var where []string
		var keyArgs []any
		for i, k := range wr.Key {
			where = append(where, t+"."+s.q(k)+" = "+s.ph(i+1))
			keyArgs = append(keyArgs, w.vals[k])
		}
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM "+t+" WHERE "+strings.Join(where, " AND "), keyArgs...).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s where %v", ErrRowMissing, wr.Table, keyArgs)
		}
		if err != nil {
			return err
		}
		var set []string
		for _, c := range w.cols {
			if !isKey[c] {
				args = append(args, w.vals[c])
				set = append(set, s.q(c)+" = "+s.ph(len(args)))
			}
		}
		if len(set) == 0 {
			return nil // every non-key column was absent: nothing to patch
		}
		where = where[:0]
		for _, k := range wr.Key {
			args = append(args, w.vals[k])
			where = append(where, s.q(k)+" = "+s.ph(len(args)))
		}
		_, err = tx.ExecContext(ctx, "UPDATE "+t+" SET "+strings.Join(set, ", ")+" WHERE "+strings.Join(where, " AND "), args...)
		return err
	}
	cols := make([]string, len(w.cols))
	var upd []string
	for i, c := range w.cols {
		cols[i] = s.q(c)
		args = append(args, w.vals[c])
		if !isKey[c] && wr.Mode == ModeUpsert {
			if s.d.Driver() == productdb.DriverMySQL {
				upd = append(upd, s.q(c)+" = VALUES("+s.q(c)+")")
			} else {
				upd = append(upd, s.q(c)+" = excluded."+s.q(c))
			}
		}
	}
	stmt := "INSERT INTO " + t + " (" + strings.Join(cols, ", ") + ") VALUES (" + s.phs(1, len(cols)) + ")"
	keys := make([]string, len(wr.Key))
	for i, k := range wr.Key {
		keys[i] = s.q(k)
	}
	switch {
	case s.d.Driver() == productdb.DriverMySQL && len(upd) == 0:
		stmt += " ON DUPLICATE KEY UPDATE " + keys[0] + " = " + keys[0]
	case s.d.Driver() == productdb.DriverMySQL:
		stmt += " ON DUPLICATE KEY UPDATE " + strings.Join(upd, ", ")
	case len(upd) == 0:
		stmt += " ON CONFLICT (" + strings.Join(keys, ", ") + ") DO NOTHING"
	default:
		stmt += " ON CONFLICT (" + strings.Join(keys, ", ") + ") DO UPDATE SET " + strings.Join(upd, ", ")
	}
	_, err := tx.ExecContext(ctx, stmt, args...)
	return err
}

// sqlValue turns a jq value into a query parameter: strings, booleans and
// null as they are, integral numbers as int64 (beyond int64: decimal
// text), other numbers float64, objects and arrays as JSON text.
func sqlValue(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string:
		return x, nil
	case int:
		return int64(x), nil
	case float64:
		return productdb.KeyParam(x)
	case *big.Int:
		if x.IsInt64() {
			return x.Int64(), nil
		}
		return x.String(), nil
	case json.Number:
		return productdb.KeyParam(x)
	case map[string]any, []any:
		b, err := json.Marshal(x)
		return string(b), err
	}
	return nil, fmt.Errorf("unsupported value %T", v)
}

// contentHash is the hash of a table's mapped values, for the unchanged
// check: SHA-256 of the canonical JSON of [table, {column: value}].
func contentHash(table string, vals map[string]any) string {
	b, _ := json.Marshal([]any{table, vals})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// compareVersions orders two versions: numerically when both are numbers,
// by time when both are RFC 3339 times, else as strings.
func compareVersions(a, b string) int {
	ra, oka := new(big.Rat).SetString(a)
	rb, okb := new(big.Rat).SetString(b)
	if oka && okb {
		return ra.Cmp(rb)
	}
	ta, erra := time.Parse(time.RFC3339Nano, a)
	tb, errb := time.Parse(time.RFC3339Nano, b)
	if erra == nil && errb == nil {
		return ta.Compare(tb)
	}
	return strings.Compare(a, b)
}

// isDataError reports whether the database refused the values themselves
// (constraint, type or range errors): retrying cannot help, the item is
// parked. Everything else (outage, lock, timeout) is retried.
func isDataError(err error) bool {
	if productdb.IsDataError(err) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return len(pe.Code) == 5 && pe.Code[:2] == "23" // integrity constraint violation
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1048, 1062, 1136, 1264, 1265, 1292, 1364, 1366, 1406, 1451, 1452, 3819, 4025:
			return true
		}
		return false
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case 19, 20, 25: // SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE
			return true
		}
	}
	return false
}
