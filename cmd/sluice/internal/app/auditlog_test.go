package app

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// Actions the CLI audits (here a pause and a resume) are listed, oldest
// first, with their records.
func TestAuditActionsListsOperatorActions(t *testing.T) {
	_, js, names := opsEnv(t)
	out, err := runCLI(t, "audit", "actions", "--json")
	require.NoError(t, err)
	require.JSONEq(t, "null", out, "nothing audited yet")

	ctx := context.Background()
	for _, rec := range []string{`{"action":"pause","by":"asha","why":"CRM maintenance"}`, `{"action":"resume","by":"asha"}`} {
		_, err := js.Publish(ctx, names.Config().Prefix+".audit.lane", []byte(rec))
		require.NoError(t, err)
	}
	out, err = runCLI(t, "audit", "actions", "--json")
	require.NoError(t, err)
	var es []AuditEntry
	require.NoError(t, json.Unmarshal([]byte(out), &es))
	require.Len(t, es, 2)
	require.JSONEq(t, `{"action":"pause","by":"asha","why":"CRM maintenance"}`, string(es[0].Record))
	require.Less(t, es[0].Seq, es[1].Seq)

	out, err = runCLI(t, "audit", "actions")
	require.NoError(t, err)
	require.Contains(t, out, "CRM maintenance")

	_, err = runCLI(t, "audit", "actions", "--since", "yesterday")
	require.ErrorContains(t, err, "--since")

	// The CLI's own control actions are audited before they act.
	lane := names.ConsumerName("dispatcher", 0)
	_, err = runCLI(t, "pause", lane, "--for", "1m", "--reason", "CRM upgrade window")
	require.NoError(t, err)
	_, err = runCLI(t, "resume", lane)
	require.NoError(t, err)
	out, err = runCLI(t, "audit", "actions")
	require.NoError(t, err)
	require.Contains(t, out, `"action":"pause"`)
	require.Contains(t, out, "CRM upgrade window")
	require.Contains(t, out, `"action":"resume"`)
}
