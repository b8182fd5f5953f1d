package productdb_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/productdb"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	require.Equal(t, productdb.Config{Driver: "sqlite", MaxOpenConns: 8}, productdb.Config{}.WithDefaults())
	cases := []struct {
		name string
		cfg  productdb.Config
		want []string
	}{
		{"ok", productdb.Config{DSN: "x.db"}, nil},
		{"no dsn", productdb.Config{}, []string{"enricher.db.dsn: required"}},
		{"bad driver", productdb.Config{Driver: "oracle", DSN: "x"}, []string{`enricher.db.driver: "oracle"`}},
		{"bad conns", productdb.Config{DSN: "x", MaxOpenConns: -1}, []string{"enricher.db.max_open_conns"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.WithDefaults().Validate()
			if c.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range c.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestDialect(t *testing.T) {
	cases := []struct {
		driver, driverName, p2, quoted, query string
	}{
		{"sqlite", "sqlite", "?", `"a""b"`, `SELECT "c"."name" AS "name", "c"."email" AS "email" FROM "c" WHERE "c"."id" = ?`},
		{"postgres", "pgx", "$2", `"a""b"`, `SELECT "c"."name" AS "name", "c"."email" AS "email" FROM "c" WHERE "c"."id" = $1`},
		{"mysql", "mysql", "?", "`a\"b`", "SELECT `c`.`name` AS `name`, `c`.`email` AS `email` FROM `c` WHERE `c`.`id` = ?"},
	}
	for _, c := range cases {
		t.Run(c.driver, func(t *testing.T) {
			d, err := productdb.DialectFor(c.driver)
			require.NoError(t, err)
			require.Equal(t, c.driver, d.Driver())
			require.Equal(t, c.driverName, d.DriverName())
			require.Equal(t, c.p2, d.Placeholder(2))
			require.Equal(t, c.quoted, d.Quote(`a"b`))
			require.Equal(t, c.query, d.SelectByKey("c", "id", []string{"name", "email"}))
		})
	}
	_, err := productdb.DialectFor("db2")
	require.Error(t, err)
	d, _ := productdb.DialectFor("mysql")
	require.Equal(t, "`a``b`", d.Quote("a`b"))
}

func TestOpenSQLiteSetsPragmas(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, dsn, journal string
		busy               int
	}{
		{"defaults", filepath.Join(t.TempDir(), "a.db"), "wal", 5000},
		{"defaults after other params", "file:" + filepath.Join(t.TempDir(), "b.db") + "?mode=rwc", "wal", 5000},
		{"own pragmas kept", filepath.Join(t.TempDir(), "c.db") + "?_pragma=busy_timeout(70)", "delete", 70},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, err := productdb.Open(ctx, productdb.Config{DSN: c.dsn})
			require.NoError(t, err)
			defer db.Close()
			var mode string
			require.NoError(t, db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode))
			require.Equal(t, c.journal, mode)
			var busy int
			require.NoError(t, db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy))
			require.Equal(t, c.busy, busy)
		})
	}
}

func TestOpenFails(t *testing.T) {
	ctx := context.Background()
	_, err := productdb.Open(ctx, productdb.Config{Driver: "oracle", DSN: "x"})
	require.ErrorContains(t, err, "enricher.db.driver")
	_, err = productdb.Open(ctx, productdb.Config{DSN: filepath.Join(t.TempDir(), "missing", "dir", "x.db")})
	require.Error(t, err)
	_, err = productdb.Open(ctx, productdb.Config{Driver: "mysql", DSN: "not a dsn"})
	require.ErrorContains(t, err, "enricher.db.dsn")
}

func TestOpenSQLiteMemoryUsesOneConnection(t *testing.T) {
	ctx := context.Background()
	db, err := productdb.Open(ctx, productdb.Config{DSN: ":memory:"})
	require.NoError(t, err)
	defer db.Close()
	require.Equal(t, 1, db.Stats().MaxOpenConnections)
	require.NoError(t, productdb.ExecScript(ctx, db, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);"))
	var x int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT x FROM t").Scan(&x))
	require.Equal(t, 7, x)
}
