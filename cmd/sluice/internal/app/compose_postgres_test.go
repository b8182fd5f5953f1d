package app

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/enricher"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

// TestComposePostgresInit runs compose.yaml's PostgreSQL init scripts the
// way the postgres image does (POSTGRES_USER, POSTGRES_DB, the mounted SQL
// files) against a fresh database on a real server, then checks that the
// enricher's sample lookups find their tables and rows there and that the
// inbound sample's tables exist.
func TestComposePostgresInit(t *testing.T) {
	dsn := os.Getenv("SLUICE_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("SLUICE_TEST_POSTGRES_DSN not set: skipping compose.yaml's PostgreSQL init scripts (CI sets it)")
	}
	psql, err := exec.LookPath("psql")
	require.NoError(t, err, "the init scripts run psql, as in the postgres image")
	ctx := context.Background()
	f, _ := loadCompose(t, nil)
	pg := f.Services["postgres"]

	// A fresh database, as on an empty volume.
	admin, err := productdb.Open(ctx, productdb.Config{Driver: "postgres", DSN: dsn})
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close() })
	dbName := fmt.Sprintf("sluice_compose_%d_%d", time.Now().UnixNano(), os.Getpid())
	_, err = admin.ExecContext(ctx, "CREATE DATABASE "+dbName)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)")
		require.NoError(t, err)
	})

	// The mounted files, where the scripts expect them.
	var initDir string
	sqlDir := t.TempDir()
	sqlMount := ""
	for _, v := range pg.Volumes {
		parts := strings.Split(v, ":")
		src, target := parts[0], parts[1]
		switch {
		case target == "/docker-entrypoint-initdb.d":
			initDir = filepath.Join(repoRoot, src)
		case strings.HasSuffix(target, ".sql"):
			if sqlMount == "" {
				sqlMount = path.Dir(target)
			}
			require.Equal(t, sqlMount, path.Dir(target), "the SQL files share one folder")
			b, err := os.ReadFile(filepath.Join(repoRoot, src))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(sqlDir, path.Base(target)), b, 0o600))
		}
	}
	require.NotEmpty(t, initDir, "postgres mounts its init scripts on /docker-entrypoint-initdb.d")
	u, err := url.Parse(dsn)
	require.NoError(t, err, "SLUICE_TEST_POSTGRES_DSN must be a postgres:// URL for this test")
	pass, _ := u.User.Password()
	env := append(os.Environ(), "PGHOST="+u.Hostname(), "PGPORT="+cmp(u.Port(), "5432"), "PGPASSWORD="+pass,
		"PGSSLMODE="+cmp(u.Query().Get("sslmode"), "prefer"),
		"POSTGRES_USER="+u.User.Username(), "POSTGRES_DB="+dbName, "SLUICE_SQL_DIR="+sqlDir)
	scripts, err := os.ReadDir(initDir)
	require.NoError(t, err)
	ran := 0
	for _, s := range scripts { // the image runs them in name order; ReadDir sorts
		var cmd *exec.Cmd
		switch filepath.Ext(s.Name()) {
		case ".sh":
			cmd = exec.Command("sh", filepath.Join(initDir, s.Name()))
		case ".sql":
			cmd = exec.Command(psql, "-v", "ON_ERROR_STOP=1", "-U", u.User.Username(), "-d", dbName, "-f", filepath.Join(initDir, s.Name()))
		default:
			continue
		}
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		require.NoErrorf(t, err, "%s:\n%s", s.Name(), out)
		ran++
	}
	require.Positive(t, ran, "no init script ran")

	u.Path = "/" + dbName
	db, err := productdb.Open(ctx, productdb.Config{Driver: "postgres", DSN: u.String()})
	require.NoError(t, err)
	defer db.Close()

	// The enricher's start-up check: every sample lookup's table and columns.
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	cat, err := loadCatalog(Defaults().Catalog)
	require.NoError(t, err)
	enr, err := enricher.New(enricher.Config{DB: productdb.Config{Driver: "postgres", DSN: u.String()}},
		enricher.Deps{NC: nc, JS: js, Names: topology.New(meshtest.Topology(1)), Catalog: cat, DB: db, Logger: zerolog.Nop()})
	require.NoError(t, err)
	require.NoError(t, enr.Check(ctx), "the sample catalog's lookups on the seeded PostgreSQL")

	// A lookup as the enricher runs it: keys come from JSON (float64).
	d, err := productdb.DialectFor("postgres")
	require.NoError(t, err)
	var name string
	require.NoError(t, db.QueryRowContext(ctx, d.SelectByKey("customers", "id", []string{"name"}), float64(7)).Scan(&name))
	require.NotEmpty(t, name)
	require.Zero(t, countRows(t, db, "lead_notes"), "the inbound sample's table exists")
	// Every row of the SQLite seed made it.
	require.Equal(t, strings.Count(schemas.MarketplaceSeed(), "\n  ("), countRows(t, db, "customers", "cars", "leads", "appointments"))
}

func countRows(t *testing.T, db *sql.DB, tables ...string) int {
	total := 0
	for _, table := range tables {
		var n int
		require.NoError(t, db.QueryRow("SELECT count(*) FROM "+table).Scan(&n), table)
		total += n
	}
	return total
}
