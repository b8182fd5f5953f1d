package productdb_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/productdb"
)

func TestSplitScript(t *testing.T) {
	cases := []struct {
		name   string
		script string
		want   []string
	}{
		{"empty", "", nil},
		{"blanks and comments", " ;\n-- only a comment;\n/* and; this */ ;", nil},
		{"two", "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1)", []string{"CREATE TABLE a (x int)", "INSERT INTO a VALUES (1)"}},
		{"semicolon in string", "INSERT INTO a VALUES ('x;y', 'it''s; ok');SELECT 1;",
			[]string{"INSERT INTO a VALUES ('x;y', 'it''s; ok')", "SELECT 1"}},
		{"quoted identifiers", "SELECT \"a;b\", `c;d` FROM t;", []string{"SELECT \"a;b\", `c;d` FROM t"}},
		{"line comment", "SELECT 1 -- one; two\n;SELECT 2", []string{"SELECT 1 -- one; two", "SELECT 2"}},
		{"block comment", "SELECT /* ; */ 1; SELECT 2", []string{"SELECT /* ; */ 1", "SELECT 2"}},
		{"dollar quoted", "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT $1",
			[]string{"CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", "SELECT $1"}},
		{"tagged dollar", "SELECT $fn$ a;b $fn$; SELECT 2", []string{"SELECT $fn$ a;b $fn$", "SELECT 2"}},
		{"unterminated quote runs to end", "SELECT 'abc; def", []string{"SELECT 'abc; def"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, productdb.SplitScript(c.script))
		})
	}
}

// seedScript has what trips a naive splitter: semicolons in a line
// comment, a block comment and a quoted value.
const seedScript = `-- customers; coupons
CREATE TABLE customers (
  id   INTEGER PRIMARY KEY,
  tier TEXT -- 'gold; silver' style values must not split the script
);
/* customers 1..10; the first one's tier has a semicolon */
INSERT INTO customers (id, tier) VALUES
  (1, 'gold; founder'), (2, 'silver'), (3, NULL), (4, 'silver'), (5, 'gold'),
  (6, 'bronze'), (7, 'bronze'), (8, 'gold'), (9, 'gold'), (10, 'silver');
`

func TestExecScriptSeedsSQLite(t *testing.T) {
	ctx := context.Background()
	db, err := productdb.Open(ctx, productdb.Config{DSN: filepath.Join(t.TempDir(), "p.db")})
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, productdb.ExecScript(ctx, db, seedScript))
	var n int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT count(*) FROM customers").Scan(&n))
	require.Equal(t, 10, n)
	var tier string
	require.NoError(t, db.QueryRowContext(ctx, "SELECT tier FROM customers WHERE id = 1").Scan(&tier))
	require.Equal(t, "gold; founder", tier)

	err = productdb.ExecScript(ctx, db, "SELECT 1;\nINSERT INTO nowhere VALUES (1);\nSELECT 2")
	require.ErrorContains(t, err, "script statement 2 (INSERT INTO nowhere VALUES (1))")
}

func FuzzSplitScript(f *testing.F) {
	for _, s := range []string{"", "a;b", "'x;y';z", "$$;$$;", "$a$ ; $a$", "-- c;\nx", "/* ; */y;", "\"q;\"`r;`", "$", "'", "/*", "$1;$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script string) {
		stmts := productdb.SplitScript(script)
		total := 0
		for _, s := range stmts {
			if s == "" || s != strings.TrimSpace(s) {
				t.Fatalf("statement %q is empty or untrimmed", s)
			}
			if !strings.Contains(script, s) {
				t.Fatalf("statement %q is not part of the script", s)
			}
			total += len(s)
		}
		if total > len(script) {
			t.Fatalf("statements longer than the script")
		}
		if strings.TrimSpace(script) != "" && !strings.ContainsAny(script, ";-/") && len(stmts) != 1 {
			t.Fatalf("a script without separators or comments gave %d statements", len(stmts))
		}
	})
}
