package app

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// The values no surface may show (issue 11): secrets under names the old
// exact-name list missed, and an e-mail marked sensitive.
const (
	leakSecret = "hunter2-PLAIN"
	leakEmail  = "priya@example.in"
)

// leakBody is an event whose data carries every one of them.
const leakBody = `{"id":"e-1","type":"order","key":"customer:7","data":{"user_password":"` + leakSecret +
	`","pwd":"` + leakSecret + `","passcode":"` + leakSecret + `","db_pass":"` + leakSecret +
	`","email":"` + leakEmail + `","city":"Pune"}}`

func requireNoLeak(t *testing.T, out string) {
	t.Helper()
	for _, s := range []string{leakSecret, leakEmail, "hunter2"} {
		require.NotContains(t, out, s, "leaked into:\n%s", out)
	}
}

// TestConfigPrintRedactsEverySecret: config print hides the status page
// token, the alert sinks' URLs, NATS and CRM credentials, ingest tokens and
// inbound secrets, and keeps the labels and ordinary URLs readable.
func TestConfigPrintRedactsEverySecret(t *testing.T) {
	cleanEnv(t)
	cfg := writeConfig(t, `
nats: {url: "nats://ops:nats-pw-`+leakSecret+`@127.0.0.1:4222", user: ops, password: "pw-`+leakSecret+`"}
ingest:
  tokens: [{name: website, token: "0123456789abcdef-`+leakSecret+`"}]
dispatcher:
  crm: {url: "https://crm.example.com/api", headers: {X-Api-Key: "k-`+leakSecret+`"}}
watchdog:
  page: {token: "page-token-`+leakSecret+`", token_name: alice}
  slack: {webhook_url: "https://hooks.slack.com/services/T0/B0/slack-`+leakSecret+`"}
  webhook: {url: "https://alerts.example.com/hook?key=wh-`+leakSecret+`"}
inbound:
  sources: [{name: crm, secrets: ["whsec-`+leakSecret+`"]}]
ledger: {sensitive_fields: [email]}
`)
	var stdout, stderr bytes.Buffer
	root := newRoot(&stdout, &stderr)
	root.SetArgs([]string{"config", "print", "--config", cfg})
	require.NoError(t, root.Execute(), stderr.String())
	out := stdout.String()
	requireNoLeak(t, out)
	for _, want := range []string{"token_name: alice", "name: website", "name: crm", "crm.example.com/api",
		"webhook_url: <redacted>", "url: <redacted>", "token: <redacted>", "127.0.0.1:4222", "- email"} {
		require.Contains(t, out, want)
	}
}

// TestParkedShowRedacts: `sluice parked show` and `parked ls` hide the
// secret-like fields and ledger.sensitive_fields of a parked body and the
// values a park reason or error quotes (here a CRM answer).
func TestParkedShowRedacts(t *testing.T) {
	js, names := cliServer(t, 1)
	t.Setenv("SLUICE_LEDGER_SENSITIVE_FIELDS", "email")
	ctx := context.Background()
	crmAnswer := `{"error":"exists","email":"` + leakEmail + `","db_pass":"` + leakSecret + `"}`
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageDispatcher, Names: names, Logger: zerolog.Nop(),
		IsolateKeys: true,
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			return lane.Park("crm rejected: 422 "+crmAnswer, errors.New("user_password="+leakSecret+" for "+leakEmail), nil)
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	m := nats.NewMsg(names.DispatchSubject(0, "order", "customer:7"))
	m.Data = []byte(leakBody)
	m.Header.Set(nats.MsgIdHdr, "e-1")
	_, err = js.PublishMsg(ctx, m)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		out, err := parkedCLI(t, "parked", "ls")
		return err == nil && strings.Contains(out, "customer:7")
	}, 10*time.Second, 50*time.Millisecond)
	out, err := parkedCLI(t, "parked", "ls")
	require.NoError(t, err)
	requireNoLeak(t, out)
	require.Contains(t, out, "crm rejected: 422")

	out, err = parkedCLI(t, "parked", "show", "customer:7")
	require.NoError(t, err)
	requireNoLeak(t, out)
	for _, want := range []string{`"user_password":"[redacted]"`, `"pwd":"[redacted]"`, `"passcode":"[redacted]"`,
		`"db_pass":"[redacted]"`, `"email":"[redacted]"`, `"city":"Pune"`, `"key":"customer:7"`, "Sluice-Park-Reason: crm rejected: 422"} {
		require.Contains(t, out, want)
	}
}
