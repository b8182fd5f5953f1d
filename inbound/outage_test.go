package inbound_test

import (
	"context"
	"database/sql"
	"net"
	"net/url"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/productdb"
)

// outage returns functions that make the database unavailable and bring it
// back. SQLite: another connection holds the write lock (every write
// fails with SQLITE_BUSY after the DSN's busy_timeout). Servers: a TCP
// proxy between the writer and the server cuts every connection and
// refuses new ones.
func (e *env) outage() (down, up func()) {
	e.t.Helper()
	if e.target.driver == "sqlite" {
		var conn *sql.Conn
		return func() {
				c, err := e.db.Conn(context.Background())
				require.NoError(e.t, err)
				_, err = c.ExecContext(context.Background(), "BEGIN IMMEDIATE")
				require.NoError(e.t, err)
				conn = c
			}, func() {
				_, err := conn.ExecContext(context.Background(), "ROLLBACK")
				require.NoError(e.t, err)
				require.NoError(e.t, conn.Close())
			}
	}
	host := hostOf(e.t, e.target, e.dsn)
	p := meshtest.NewTCPProxy(e.t, host)
	e.proxyDSN = e.target.viaProxy(e.t, e.dsn, p.Addr())
	return p.Down, p.Up
}

// viaOutageDSN gives the service its own database handle through the proxy
// (servers) so only the writer loses the database.
func (e *env) viaOutageDSN(cfg *inbound.Config, deps *inbound.Deps) {
	if e.proxyDSN == "" {
		return
	}
	db, err := productdb.Open(context.Background(), productdb.Config{Driver: e.target.driver, DSN: e.proxyDSN})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { db.Close() })
	cfg.DB.DSN = e.proxyDSN
	deps.DB = db
}

func hostOf(t testing.TB, target dbTarget, dsn string) string {
	if target.driver == "postgres" {
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		if u.Port() == "" {
			return net.JoinHostPort(u.Hostname(), "5432")
		}
		return u.Host
	}
	c, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	return c.Addr
}
