package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
)

func TestCRMIDsRoundTripIsAudited(t *testing.T) {
	js, names := cliServer(t, 2)
	ctx := context.Background()

	_, err := runCLI(t, "crm-ids", "set", "deals", "deal:1", "deals-9")
	require.ErrorContains(t, err, "--reason is required")

	out, err := runCLI(t, "crm-ids", "set", "deals", "deal:1", "deals-9", "--reason", "answer lost, found by hand")
	require.NoError(t, err)
	require.Contains(t, out, `deals "deal:1" → deals-9 (was none)`)
	out, err = runCLI(t, "crm-ids", "get", "deals", "deal:1")
	require.NoError(t, err)
	require.Equal(t, "deals-9\n", out)

	// The dispatcher reads the same entry.
	m, err := dispatcher.OpenIDMap(ctx, js, names)
	require.NoError(t, err)
	e, found, err := m.Get(ctx, "deals", "deal:1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, "deals-9", e.CRMID)

	file := filepath.Join(t.TempDir(), "ids.csv")
	require.NoError(t, os.WriteFile(file, []byte("object,id_key,crm_id\ncontacts,contact:1,c-1\ncontacts,\"contact:2,x\",c-2\ndeals,deal:1,deals-10\n"), 0o600))
	out, err = runCLI(t, "crm-ids", "import", file, "--reason", "migration")
	require.NoError(t, err)
	require.Contains(t, out, "imported 3 entries (1 replaced a different id)")

	out, err = runCLI(t, "crm-ids", "ls", "--object", "contacts")
	require.NoError(t, err)
	require.Contains(t, out, `"contact:2,x"`)
	require.Contains(t, out, "2 entries")
	require.NotContains(t, out, "deals-10")

	out, err = runCLI(t, "crm-ids", "rm", "contacts", "contact:1", "--reason", "record deleted in the CRM")
	require.NoError(t, err)
	require.Contains(t, out, "removed")
	_, err = runCLI(t, "crm-ids", "get", "contacts", "contact:1")
	require.ErrorIs(t, err, errNotFound)

	es, err := listAudit(ctx, js, names, time.Now().Add(-time.Hour), 100)
	require.NoError(t, err)
	var actions []string
	for _, e := range es {
		actions = append(actions, e.Subject[strings.LastIndexByte(e.Subject, '.')+1:])
	}
	require.Equal(t, []string{auditCRMIDSet, auditCRMIDImport, auditCRMIDRemove}, actions)
}

func TestCRMIDsImportChecksEveryRowFirst(t *testing.T) {
	for _, tc := range []struct{ name, csv, want string }{
		{"header", "a,b,c\n", "header must be"},
		{"bad object", "object,id_key,crm_id\nde als,k,1\n", "line 2"},
		{"empty id", "object,id_key,crm_id\ndeals,k,1\ndeals,k2,\n", "line 3"},
		{"columns", "object,id_key,crm_id\ndeals,k\n", "wrong number of fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIDCSV(strings.NewReader(tc.csv))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// FuzzParseIDCSV: an import file never panics the parser, and every row
// it accepts is a valid entry.
func FuzzParseIDCSV(f *testing.F) {
	f.Add("object,id_key,crm_id\ndeals,deal:1,deals-9\n")
	f.Add("object,id_key,crm_id\n\"a\nb\",x,y\n")
	f.Fuzz(func(t *testing.T, s string) {
		rows, err := parseIDCSV(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, r := range rows {
			require.NoError(t, dispatcher.CheckIDEntry(r.Object, r.IDKey, r.CRMID))
			require.NotEmpty(t, r.CRMID)
		}
	})
}
