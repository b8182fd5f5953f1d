package meshtest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// Option secures a server started by RunServer, RunServerOn or RunCluster.
// Options are applied afresh on every start (and Cluster.Restart), so a
// restarted node gets new accounts from the same file.
type Option func(*setup)

type setup struct {
	pki      *PKI
	verify   bool
	authConf string
}

// WithTLS makes the client port require TLS with p's server certificate.
// Clients need p.CAFile (nats.RootCAs). Routes stay plain.
func WithTLS(p *PKI) Option {
	return func(s *setup) { s.pki = p }
}

// WithClientCerts is WithTLS that also requires every client to present a
// certificate signed by p's CA (mutual TLS): p.ClientCertFile/ClientKeyFile.
func WithClientCerts(p *PKI) Option {
	return func(s *setup) { s.pki, s.verify = p, true }
}

// WithAuthConfig takes the accounts, users and permissions (authorization,
// accounts, system_account, no_auth_user) from a nats-server config file,
// e.g. deploy/nats/permissions.conf; variables it references ($NAME) are
// read from the environment (t.Setenv them first). Everything else in the
// file is ignored: ports, store and cluster stay the test's.
func WithAuthConfig(path string) Option {
	return func(s *setup) { s.authConf = path }
}

func newSetup(opts []Option) setup {
	var s setup
	for _, o := range opts {
		o(&s)
	}
	return s
}

// apply adds TLS and auth to o, building new objects each call: a server
// keeps and mutates its accounts and TLS config.
func (s setup) apply(t testing.TB, o *server.Options) {
	t.Helper()
	if s.pki != nil {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: s.pki.ServerCertFile, KeyFile: s.pki.ServerKeyFile, CaFile: s.pki.CAFile, Verify: s.verify,
		})
		if err != nil {
			t.Fatalf("meshtest: TLS config: %v", err)
		}
		o.TLS, o.TLSVerify, o.TLSConfig, o.TLSTimeout = true, s.verify, tc, 5
	}
	if s.authConf != "" {
		fo, err := server.ProcessConfigFile(s.authConf)
		if err != nil {
			t.Fatalf("meshtest: auth config %s: %v", s.authConf, err)
		}
		o.Accounts, o.Users, o.Nkeys = fo.Accounts, fo.Users, fo.Nkeys
		o.SystemAccount, o.NoAuthUser = fo.SystemAccount, fo.NoAuthUser
		o.Username, o.Password, o.Authorization = fo.Username, fo.Password, fo.Authorization
	}
}
