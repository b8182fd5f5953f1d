package meshtest_test

import (
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
)

func dial(url string, opts ...nats.Option) error {
	nc, err := nats.Connect(url, append(opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
	if err == nil {
		nc.Close()
	}
	return err
}

// A TLS server is reached with the PKI's CA and refused without it; with
// client certificates required, a client without one is refused.
func TestServerTLS(t *testing.T) {
	p := meshtest.NewPKI(t)
	s := meshtest.RunServer(t, "", meshtest.WithTLS(p))
	require.NoError(t, dial(s.ClientURL(), nats.RootCAs(p.CAFile)))
	u, err := url.Parse(s.ClientURL())
	require.NoError(t, err)
	require.NoError(t, dial("tls://localhost:"+u.Port(), nats.RootCAs(p.CAFile)), "SAN localhost")
	var unknownCA x509.UnknownAuthorityError
	err = dial(s.ClientURL(), nats.RootCAs(p.OtherCAFile))
	require.True(t, errors.As(err, &unknownCA), "another CA: %v", err)
	require.Error(t, dial(s.ClientURL()), "system roots do not know the test CA")

	m := meshtest.RunServer(t, "", meshtest.WithClientCerts(p))
	require.NoError(t, dial(m.ClientURL(), nats.RootCAs(p.CAFile), nats.ClientCert(p.ClientCertFile, p.ClientKeyFile)))
	require.Error(t, dial(m.ClientURL(), nats.RootCAs(p.CAFile)), "no client certificate")
}

// WithAuthConfig loads users from a config file, resolving $VARIABLES from
// the environment, on every node of a cluster (and again on a restart).
func TestClusterAuthConfig(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "auth.conf")
	require.NoError(t, os.WriteFile(conf, []byte(
		"accounts { A { jetstream: enabled, users: [ {user: u, password: $MESHTEST_PW} ] } }\n"), 0o600))
	t.Setenv("MESHTEST_PW", "s3cret")
	p := meshtest.NewPKI(t)
	c := meshtest.RunCluster(t, 3, meshtest.WithTLS(p), meshtest.WithAuthConfig(conf))
	require.NoError(t, dial(c.URLs(), nats.RootCAs(p.CAFile), nats.UserInfo("u", "s3cret")))
	err := dial(c.URLs(), nats.RootCAs(p.CAFile), nats.UserInfo("u", "wrong"))
	require.ErrorIs(t, err, nats.ErrAuthorization)

	c.Kill(1)
	c.Restart(1)
	for i := range 3 {
		url := c.Servers()[i].ClientURL()
		require.NoError(t, dial(url, nats.RootCAs(p.CAFile), nats.UserInfo("u", "s3cret"), nats.DontRandomize()), "node %d", i)
	}
}
