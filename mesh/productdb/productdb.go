// Package productdb opens the product database the enricher reads its
// data-mart rows from (SQLite, PostgreSQL or MySQL/MariaDB) and knows the
// small differences between their SQL dialects.
package productdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

// Drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
	DriverMySQL    = "mysql"
)

// SQLitePragmas are added to a SQLite DSN that sets no pragmas itself: wait
// up to 5s for a lock instead of failing at once, and let readers run while
// another process writes.
const SQLitePragmas = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"

// Config says which product database to read.
type Config struct {
	// Driver is sqlite, postgres or mysql (MariaDB too). Default sqlite.
	Driver string `yaml:"driver"`
	// DSN is the driver's data source name: a file path or file: URI for
	// SQLite, postgres://user@host:5432/db?sslmode=disable for PostgreSQL,
	// user:pass@tcp(host:3306)/db for MySQL. Required. Never logged.
	DSN string `yaml:"dsn"`
	// MaxOpenConns caps the connections to the database. Default 8.
	MaxOpenConns int `yaml:"max_open_conns"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Driver == "" {
		c.Driver = DriverSQLite
	}
	if c.MaxOpenConns == 0 {
		c.MaxOpenConns = 8
	}
	return c
}

// Validate reports every invalid field, named by its config key.
func (c Config) Validate() error {
	var errs []error
	switch c.Driver {
	case DriverSQLite, DriverPostgres, DriverMySQL:
	default:
		errs = append(errs, fmt.Errorf("enricher.db.driver: %q is not sqlite, postgres or mysql", c.Driver))
	}
	if strings.TrimSpace(c.DSN) == "" {
		errs = append(errs, errors.New("enricher.db.dsn: required"))
	}
	if c.MaxOpenConns < 1 {
		errs = append(errs, fmt.Errorf("enricher.db.max_open_conns: %d must be >= 1", c.MaxOpenConns))
	}
	return errors.Join(errs...)
}

// Open opens the database cfg names (after defaults) and pings it. For
// SQLite it adds SQLitePragmas when the DSN sets no pragma; for MySQL it
// turns on parseTime unless the DSN sets it, so DATETIME columns arrive as
// times.
func Open(ctx context.Context, cfg Config) (*sql.DB, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d, _ := DialectFor(cfg.Driver)
	dsn, err := driverDSN(cfg)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open(d.DriverName(), dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", cfg.Driver, err)
	}
	conns := cfg.MaxOpenConns
	if cfg.Driver == DriverSQLite && sqliteInMemory(cfg.DSN) {
		conns = 1 // every connection to :memory: is a different database
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ping %s database: %w", cfg.Driver, err)
	}
	return db, nil
}

func driverDSN(cfg Config) (string, error) {
	switch cfg.Driver {
	case DriverSQLite:
		if strings.Contains(cfg.DSN, "_pragma=") {
			return cfg.DSN, nil
		}
		sep := "?"
		if strings.Contains(cfg.DSN, "?") {
			sep = "&"
		}
		return cfg.DSN + sep + SQLitePragmas, nil
	case DriverMySQL:
		mc, err := mysql.ParseDSN(cfg.DSN)
		if err != nil {
			return "", fmt.Errorf("enricher.db.dsn: %w", err)
		}
		if !strings.Contains(cfg.DSN, "parseTime=") {
			mc.ParseTime = true
		}
		return mc.FormatDSN(), nil
	}
	return cfg.DSN, nil
}

func sqliteInMemory(dsn string) bool {
	return strings.HasPrefix(dsn, ":memory:") || strings.Contains(dsn, "mode=memory")
}

// Dialect is what differs between the supported SQL dialects.
type Dialect struct{ driver string }

// DialectFor returns the dialect of a driver (sqlite, postgres or mysql).
func DialectFor(driver string) (Dialect, error) {
	switch driver {
	case DriverSQLite, DriverPostgres, DriverMySQL:
		return Dialect{driver: driver}, nil
	}
	return Dialect{}, fmt.Errorf("productdb: unknown driver %q", driver)
}

// Driver is the config driver name (sqlite, postgres, mysql).
func (d Dialect) Driver() string { return d.driver }

// DriverName is the database/sql driver name registered for the dialect.
func (d Dialect) DriverName() string {
	switch d.driver {
	case DriverPostgres:
		return "pgx"
	case DriverMySQL:
		return "mysql"
	}
	return "sqlite"
}

// Placeholder returns the n-th (1-based) query parameter placeholder:
// $n for PostgreSQL, ? otherwise.
func (d Dialect) Placeholder(n int) string {
	if d.driver == DriverPostgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// Quote quotes an identifier: backticks for MySQL, double quotes otherwise.
// Callers pass identifiers checked by catalog.ValidIdent; Quote still
// doubles any quote character so it can never end the identifier early.
func (d Dialect) Quote(ident string) string {
	if d.driver == DriverMySQL {
		return "`" + strings.ReplaceAll(ident, "`", "``") + "`"
	}
	return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"`
}

// SelectByKey builds `SELECT <t>.<c> AS <c>, ... FROM <t> WHERE <t>.<key> =
// <p1>` with every identifier quoted. The key value is the query's only
// parameter. Columns are qualified with the table because SQLite reads an
// unknown double-quoted name as a string literal: "e_mail" alone would
// return the text 'e_mail' instead of failing, "customers"."e_mail" fails.
func (d Dialect) SelectByKey(table, keyColumn string, cols []string) string {
	t := d.Quote(table)
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t + "." + d.Quote(c) + " AS " + d.Quote(c))
	}
	b.WriteString(" FROM " + t + " WHERE " + t + "." + d.Quote(keyColumn) + " = " + d.Placeholder(1))
	return b.String()
}
