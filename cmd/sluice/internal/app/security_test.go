package app

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/ingest"
	"sluice.dev/ingest/client"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// permissionsConf is the file operators deploy: the test loads it as is.
var permissionsConf = filepath.Join(repoRoot, "deploy", "nats", "permissions.conf")

// Test passwords: letters and digits starting with a letter, as the file's
// comment asks.
var busPasswords = map[string]string{
	"sluice": "pSluice7f3a9c", "producer": "pProducer2b8e", "operator": "pOperator5d1c",
}

// secureCluster starts the three-node cluster with client TLS and the
// users and permissions of deploy/nats/permissions.conf.
func secureCluster(t *testing.T) (*meshtest.Cluster, *meshtest.PKI) {
	t.Helper()
	for user, pw := range busPasswords {
		t.Setenv("NATS_"+strings.ToUpper(user)+"_PASSWORD", pw)
	}
	pki := meshtest.NewPKI(t)
	return meshtest.RunCluster(t, 3, meshtest.WithTLS(pki), meshtest.WithAuthConfig(permissionsConf)), pki
}

// as returns the client options of user with the cluster's CA and, for
// producer and operator, the inbox prefix their permissions allow.
func as(pki *meshtest.PKI, user string) []nats.Option {
	opts := []nats.Option{nats.RootCAs(pki.CAFile), nats.UserInfo(user, busPasswords[user]), nats.Timeout(5 * time.Second)}
	if user != "sluice" {
		opts = append(opts, nats.CustomInboxPrefix("_INBOX_"+user))
	}
	return opts
}

// The whole pipeline runs over a TLS cluster as user sluice (credentials
// and CA from SLUICE_NATS_* variables); a producer publishes and gets its
// acks; an operator runs the CLI; and the producer and operator are refused
// what deploy/nats/permissions.conf denies them.
func TestSecureBus(t *testing.T) {
	cleanEnv(t)
	cl, pki := secureCluster(t)
	sim, err := crmsim.New(crmsim.Config{}, zerolog.Nop())
	require.NoError(t, err)
	require.NoError(t, sim.Start(context.Background()))
	t.Cleanup(func() { _ = sim.Stop(context.Background()) })

	// Replicas 1: the permissions do not depend on it, and on R3 the
	// dispatcher's read of a CRM id it has just stored can hit a follower
	// that has not applied it yet ("no CRM id", parked; seen 1 run in 4).
	cfgPath := writeConfig(t, `
topology: {partitions: 2, replicas: 1}
demo: {enabled: "false"}
progress_interval: -1s
ops: {addr: "127.0.0.1:0"}
ingest: {http_addr: "127.0.0.1:0"}
inbound:
  http_addr: "127.0.0.1:0"
  sources: [{name: crm, secrets: ["`+DemoWebhookSecret+`"]}]
`)
	for k, v := range map[string]string{
		"SLUICE_NATS_URL": cl.URLs(), "SLUICE_NATS_USER": "sluice", "SLUICE_NATS_PASSWORD": busPasswords["sluice"],
		"SLUICE_NATS_TLS_CA_FILE": pki.CAFile, "SLUICE_DISPATCHER_CRM_URL": sim.URL(), "SLUICE_DATA_DIR": t.TempDir(),
	} {
		t.Setenv(k, v)
	}
	c, err := LoadConfig(cfgPath, "all")
	require.NoError(t, err)
	names := topology.New(c.Topology)

	logs := &meshtest.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, "all", zerolog.New(logs).Level(zerolog.InfoLevel)) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(stop)

	producer, err := nats.Connect(cl.URLs(), as(pki, "producer")...)
	require.NoError(t, err)
	t.Cleanup(producer.Close)
	pjs, err := jetstream.New(producer)
	require.NoError(t, err)

	plan, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 200, Keys: 20, Seed: 5})
	require.NoError(t, err)

	t.Run("producer publishes through ingest's micro endpoint", func(t *testing.T) {
		b, err := plan.Events[0].Marshal()
		require.NoError(t, err)
		var resp ingest.Response
		require.Eventually(t, func() bool { // until ingest is up
			m, err := producer.Request(names.Config().Prefix+".ingest.publish", b, 2*time.Second)
			if err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
				return false
			}
			return json.Unmarshal(m.Data, &resp) == nil
		}, 60*time.Second, 100*time.Millisecond)
		require.Len(t, resp.Results, 1)
		require.True(t, resp.Results[0].Stored)
		require.Equal(t, plan.Events[0].ID, resp.Results[0].ID)
	})

	t.Run("producer publishes over JetStream and gets the acks", func(t *testing.T) {
		pc, err := client.New(client.Config{Source: "security-test"}, client.NewJetStream(pjs, names))
		require.NoError(t, err)
		pctx, pcancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer pcancel()
		rs, err := pc.PublishBatch(pctx, plan.Events[1:])
		require.NoError(t, err)
		for _, r := range rs {
			require.NotZero(t, r.StreamSeq)
		}
	})

	t.Run("the CRM gets every event in order", func(t *testing.T) {
		var rep crmsim.Report
		require.Eventually(t, func() bool {
			rep = sim.Check(plan.Expected())
			return rep.Totals.Missing == 0
		}, 90*time.Second, 100*time.Millisecond, "not everything reached the CRM")
		require.Zero(t, rep.Totals.ReorderedKeys)
		require.Zero(t, rep.Totals.Unexpected)
	})

	t.Run("operator runs the CLI", func(t *testing.T) {
		t.Setenv("SLUICE_NATS_USER", "operator")
		t.Setenv("SLUICE_NATS_PASSWORD", busPasswords["operator"])
		t.Setenv("SLUICE_NATS_INBOX_PREFIX", "_INBOX_operator")
		var st Status
		require.Eventually(t, func() bool { // the inbound lanes start last
			out := cli(t, cfgPath, "status", "--json")
			require.NoError(t, json.Unmarshal([]byte(out), &st), out)
			return len(st.Lanes) == 3*2 // enricher, dispatcher and inbound lanes of 2 partitions
		}, 30*time.Second, 200*time.Millisecond)
		for _, l := range st.Lanes {
			require.Empty(t, l.ConsumerError, l.Consumer)
		}
		require.NotEmpty(t, st.Services, "micro PING replies reach the operator's inbox")
		require.Contains(t, cli(t, cfgPath, "pause", "dispatcher-000", "--for", "1m", "--reason", "test"), "paused dispatcher-000")
		require.Contains(t, cli(t, cfgPath, "resume", "dispatcher-000"), "resumed dispatcher-000")
		require.Contains(t, cli(t, cfgPath, "parked", "ls"), "no parked keys")
		require.Contains(t, cli(t, cfgPath, "audit", "actions"), "resume")
	})

	operator, err := nats.Connect(cl.URLs(), as(pki, "operator")...)
	require.NoError(t, err)
	t.Cleanup(operator.Close)

	// What each user must not do, and what the deny protects.
	refusals := []struct {
		user, name string
		do         func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error
	}{
		{"producer", "create a consumer on the CRM stream", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.CreateConsumer(ctx, names.DispatchStream(), jetstream.ConsumerConfig{})
			return err
		}},
		{"producer", "subscribe to the CRM requests", subscribe(names.Config().Prefix + ".dispatch.>")},
		{"producer", "subscribe to the services' inboxes (lane deliveries, KV reads)", subscribe("_INBOX.>")},
		{"producer", "subscribe to other producers' events", subscribe(names.Config().Prefix + ".events.>")},
		{"producer", "watch KV writes", subscribe("$KV.>")},
		{"producer", "read the CRM id map", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.KeyValue(ctx, names.CRMIDBucket())
			return err
		}},
		{"producer", "get a CRM id directly", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+names.CRMIDBucket()+".$KV."+names.CRMIDBucket()+".x", nil)
			return err
		}},
		{"producer", "read the inbound stream", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Stream(ctx, names.InboundStream())
			return err
		}},
		{"producer", "inject a CRM request", publish(names.DispatchSubject(0, "customer_updated", "customer:1"))},
		{"producer", "restart a lane", publish(names.ControlSubject("dispatcher"))},
		{"producer", "choose a partition (stored subject)", publish(names.Config().Prefix + ".events.0.customer_updated.x")},
		{"producer", "purge the events stream", publish("$JS.API.STREAM.PURGE." + names.EventsStream())},
		{"operator", "delete a stream", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			return js.DeleteStream(ctx, names.EventsStream())
		}},
		{"operator", "purge the CRM stream", publish("$JS.API.STREAM.PURGE." + names.DispatchStream())},
		{"operator", "delete an audit record", publish("$JS.API.STREAM.MSG.DELETE." + names.AuditStream())},
		{"operator", "ack a lane message", publish("$JS.ACK." + names.DispatchStream() + ".dispatcher-000.1.1.1.1.0")},
		{"operator", "subscribe to the services' inboxes", subscribe("_INBOX.>")},
	}
	for _, r := range refusals {
		t.Run(r.user+" may not "+r.name, func(t *testing.T) {
			requireRefused(t, cl.URLs(), as(pki, r.user), r.do)
		})
	}

	t.Run("clients without the password or the CA cannot connect", func(t *testing.T) {
		for name, opts := range map[string][]nats.Option{
			"wrong password":          {nats.RootCAs(pki.CAFile), nats.UserInfo("producer", "wrong")},
			"another user's password": {nats.RootCAs(pki.CAFile), nats.UserInfo("operator", busPasswords["sluice"])},
			"no credentials":          {nats.RootCAs(pki.CAFile)},
		} {
			_, err := nats.Connect(cl.URLs(), append(opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
			require.ErrorIs(t, err, nats.ErrAuthorization, name)
		}
		for name, opts := range map[string][]nats.Option{
			"system roots only": {nats.UserInfo("sluice", busPasswords["sluice"])},
			"another CA":        {nats.RootCAs(pki.OtherCAFile), nats.UserInfo("sluice", busPasswords["sluice"])},
		} {
			_, err := nats.Connect(cl.URLs(), append(opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
			var unknownCA x509.UnknownAuthorityError
			require.True(t, errors.As(err, &unknownCA), "%s: %v", name, err)
		}
	})

	stop()
	var refused []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(strings.ToLower(line), "permissions violation") {
			refused = append(refused, line)
		}
	}
	require.Empty(t, refused, "a service was refused something: deploy/nats/permissions.conf lacks a permission")
}

// cli runs a sluice command and returns its stdout.
func cli(t *testing.T, cfgPath string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRoot(&stdout, &stderr)
	root.SetArgs(append(args, "--config", cfgPath))
	require.NoError(t, root.Execute(), "sluice %v: %s", args, stderr.String())
	return stdout.String()
}

func subscribe(subject string) func(context.Context, *nats.Conn, jetstream.JetStream) error {
	return func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
		if _, err := nc.SubscribeSync(subject); err != nil {
			return err
		}
		return nc.Flush()
	}
}

func publish(subject string) func(context.Context, *nats.Conn, jetstream.JetStream) error {
	return func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
		if err := nc.Publish(subject, []byte("{}")); err != nil {
			return err
		}
		return nc.Flush()
	}
}

// requireRefused runs do on a fresh connection with opts and requires the
// server to refuse it with a permissions violation: returned by do, or
// reported on the connection (a refused publish or subscribe is reported
// asynchronously; a refused JetStream API request would otherwise just
// time out).
func requireRefused(t *testing.T, url string, opts []nats.Option, do func(context.Context, *nats.Conn, jetstream.JetStream) error) {
	t.Helper()
	async := make(chan error, 16)
	nc, err := nats.Connect(url, append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case async <- err:
		default:
		}
	}))...)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- do(ctx, nc, js) }()
	for {
		select {
		case err := <-async:
			if errors.Is(err, nats.ErrPermissionViolation) {
				return
			}
		case err := <-res:
			if errors.Is(err, nats.ErrPermissionViolation) || errors.Is(nc.LastError(), nats.ErrPermissionViolation) {
				return
			}
			res = nil // done without a refusal so far: wait for a late report
		case <-ctx.Done():
			t.Fatalf("not refused: no permissions violation within 5s (last error %v)", nc.LastError())
		}
	}
}

// With verify on (mutual TLS), nats.tls.cert_file/key_file get a command
// in and their absence keeps it out; nats.tls.server_name is what the
// server's certificate is checked against.
func TestNATSMutualTLS(t *testing.T) {
	cleanEnv(t)
	for user, pw := range busPasswords {
		t.Setenv("NATS_"+strings.ToUpper(user)+"_PASSWORD", pw)
	}
	pki := meshtest.NewPKI(t)
	s := meshtest.RunServer(t, "", meshtest.WithClientCerts(pki), meshtest.WithAuthConfig(permissionsConf))
	base := NATSConfig{URL: s.ClientURL(), User: "operator", Password: busPasswords["operator"], InboxPrefix: "_INBOX_operator",
		TLS: NATSTLSConfig{CAFile: pki.CAFile, CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile}}
	connect := func(n NATSConfig) error {
		require.NoError(t, n.validate())
		nc, _, err := connectCLI(Config{NATS: n}, "test")
		if err == nil {
			nc.Close()
		}
		return err
	}
	require.NoError(t, connect(base))

	named := base
	named.TLS.ServerName = "localhost" // dialed by IP, checked as localhost
	require.NoError(t, connect(named))

	noCert := base
	noCert.TLS.CertFile, noCert.TLS.KeyFile = "", ""
	require.Error(t, connect(noCert), "no client certificate")

	wrongName := base
	wrongName.TLS.ServerName = "nats.example.com"
	err := connect(wrongName)
	var badHost x509.HostnameError
	require.True(t, errors.As(err, &badHost), "%v", err)
	require.ErrorContains(t, err, "nats.tls.server_name")

	wrongPW := base
	wrongPW.Password = "pWrong1"
	err = connect(wrongPW)
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.NotContains(t, err.Error(), "pWrong1")
}

// deploy/nats/nats.conf (the compose cluster node) parses with its
// variables set, includes the permissions, and fails without a password.
func TestDeployNATSConf(t *testing.T) {
	conf := filepath.Join(repoRoot, "deploy", "nats", "nats.conf")
	t.Setenv("NATS_SERVER_NAME", "nats-2")
	for user, pw := range busPasswords {
		t.Setenv("NATS_"+strings.ToUpper(user)+"_PASSWORD", pw)
	}
	o, err := server.ProcessConfigFile(conf)
	require.NoError(t, err)
	require.Equal(t, "nats-2", o.ServerName)
	require.Equal(t, []int{4222, 8222, 6222}, []int{o.Port, o.HTTPPort, o.Cluster.Port})
	require.True(t, o.JetStream)
	require.Equal(t, int32(8<<20), o.MaxPayload)
	var routes []string
	for _, r := range o.Routes {
		routes = append(routes, r.Host)
	}
	require.Equal(t, []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}, routes)
	var users []string
	for _, u := range o.Users {
		users = append(users, u.Username+"@"+u.Account.Name)
	}
	require.ElementsMatch(t, []string{"sluice@SLUICE", "producer@SLUICE", "operator@SLUICE"}, users)

	require.NoError(t, os.Unsetenv("NATS_PRODUCER_PASSWORD"))
	_, err = server.ProcessConfigFile(conf)
	require.ErrorContains(t, err, "NATS_PRODUCER_PASSWORD", "a missing password stops the server")
}
