package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/xuri/excelize/v2"

	"sluice.dev/ingest"
	"sluice.dev/ingest/client"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

// writeTestXLSX writes rows (the header first) to the first sheet of a new
// workbook; cells that parse as integers are stored as numbers, as a
// spreadsheet program would.
func writeTestXLSX(t testing.TB, path string, rows [][]string) {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
	sw, err := f.NewStreamWriter("Sheet1")
	require.NoError(t, err)
	for i, r := range rows {
		cells := make([]any, len(r))
		for j, v := range r {
			if n, ok := importInt(v); ok && i > 0 && j == 0 {
				i64, _ := n.Int64()
				cells[j] = i64
			} else {
				cells[j] = v
			}
		}
		cell, err := excelize.CoordinatesToCellName(1, i+1)
		require.NoError(t, err)
		require.NoError(t, sw.SetRow(cell, cells))
	}
	require.NoError(t, sw.Flush())
	require.NoError(t, f.SaveAs(path))
}

// storedEvents is the events stream's message count.
func storedEvents(t *testing.T, js jetstream.JetStream, names topology.Names) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), names.EventsStream())
	require.NoError(t, err)
	return s.CachedInfo().State.Msgs
}

func TestImportBadRowsReportedAndNothingStored(t *testing.T) {
	js, names := cliServer(t, 4)
	for _, dry := range []bool{true, false} {
		args := []string{"import", "testdata/import/customers_bad.csv", "--type", "customer_signed_up"}
		if dry {
			args = append(args, "--dry-run")
		}
		out, err := runCLI(t, args...)
		require.ErrorIs(t, err, errImportRows)
		require.Contains(t, out, "row 4: data.email: ")
		require.Contains(t, out, "row 7: data.customer_id: ")
		require.Contains(t, out, "row 8: data.city: required\n")
		require.NotContains(t, out, "row 2:")
		require.Equal(t, 3, strings.Count(out, "row "), out)
		require.Contains(t, out, "3 of 8 rows invalid; nothing sent")
	}
	require.Zero(t, storedEvents(t, js, names))

	out, err := runCLI(t, "import", "testdata/import/customers.csv", "--type", "customer_signed_up", "--dry-run")
	require.NoError(t, err)
	require.Equal(t, "all 20 rows valid (dry run: nothing sent)\n", out)
	require.Zero(t, storedEvents(t, js, names))
}

func TestImportBadFlags(t *testing.T) {
	cliServer(t, 4)
	for name, args := range map[string][]string{
		"unknown type": {"--type", "nope"},
		"key column":   {"--type", "customer_signed_up", "--key-column", "nope"},
		"via":          {"--type", "customer_signed_up", "--via", "smtp"},
		"map type":     {"--type", "customer_signed_up", "--map", "testdata/import/bad_map.yaml"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := runCLI(t, append([]string{"import", "testdata/import/customers.csv"}, args...)...)
			require.ErrorIs(t, err, config.ErrInvalid)
		})
	}
}

// TestImportLargeCSVOnceInOrder: 10,000 rows over 300 keys are stored once
// each, in file order per key; a second run stores nothing new.
func TestImportLargeCSVOnceInOrder(t *testing.T) {
	js, names := cliServer(t, 4)
	path := filepath.Join(t.TempDir(), "big.csv")
	var b strings.Builder
	b.WriteString("customer_id,name,email,phone,city\n")
	const rows, keys = 10000, 300
	for i := 0; i < rows; i++ {
		fmt.Fprintf(&b, "%d,Person %d,p%d@example.com,+91 98200 %05d,Pune\n", 1+i%keys, i+2, i, i)
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))

	out, err := runCLI(t, "import", path, "--type", "customer_signed_up", "--batch", "500")
	require.NoError(t, err)
	require.Contains(t, out, fmt.Sprintf("imported %d rows from %s: %d stored, 0 already stored", rows, path, rows))
	require.EqualValues(t, rows, storedEvents(t, js, names))

	out, err = runCLI(t, "import", path, "--type", "customer_signed_up", "--batch", "500")
	require.NoError(t, err)
	require.Contains(t, out, fmt.Sprintf(": 0 stored, %d already stored (duplicates)", rows))
	require.EqualValues(t, rows, storedEvents(t, js, names))

	// Per key, rows arrive in file order (the name carries the row number).
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, names.EventsStream(), jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	last := map[string]int{}
	ids := map[string]bool{}
	for got := 0; got < rows; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			got++
			ev, err := envelope.Decode(m.Data())
			require.NoError(t, err)
			require.False(t, ids[ev.ID], "id %s stored twice", ev.ID)
			ids[ev.ID] = true
			var d struct{ Name string }
			require.NoError(t, json.Unmarshal(ev.Data, &d))
			var row int
			_, err = fmt.Sscanf(d.Name, "Person %d", &row)
			require.NoError(t, err)
			require.Greater(t, row, last[ev.Key], "key %s out of order", ev.Key)
			require.Equal(t, fmt.Sprintf("customer:%d", 1+(row-2)%keys), ev.Key, "key derived by the type's key expression")
			last[ev.Key] = row
		}
		require.NoError(t, batch.Error())
	}
	require.Len(t, last, keys)
}

func TestImportXLSXWithMappingAndKeyColumn(t *testing.T) {
	js, names := cliServer(t, 4)
	dir := t.TempDir()
	path := filepath.Join(dir, "agents.xlsx")
	writeTestXLSX(t, path, [][]string{
		{"ID", "Full name", "E-mail", "Phone", "city", "Agent notes", "Account"},
		{"7001", "Asha Rao", "asha@example.com", "+91 98200 11111", "Pune", "called twice", "acct-1"},
		{"", "", "", "", "", "", ""}, // blank rows are skipped, numbering keeps counting
		{"7002", "Ravi Iyer", "ravi@example.com", "+91 98200 22222", "Goa", "", "acct-2"},
	})
	out, err := runCLI(t, "import", path, "--type", "customer_signed_up", "--map", "testdata/import/map.yaml",
		"--key-column", "Account", "--dry-run")
	require.NoError(t, err, out)
	require.Contains(t, out, "all 2 rows valid")

	out, err = runCLI(t, "import", path, "--type", "customer_signed_up", "--map", "testdata/import/map.yaml", "--key-column", "Account")
	require.NoError(t, err)
	require.Contains(t, out, ": 2 stored, 0 already stored")
	require.EqualValues(t, 2, storedEvents(t, js, names))
	st, err := js.Stream(context.Background(), names.EventsStream())
	require.NoError(t, err)
	m, err := st.GetLastMsgForSubject(context.Background(), ">")
	require.NoError(t, err)
	ev, err := envelope.Decode(m.Data)
	require.NoError(t, err)
	require.Equal(t, "acct-2", ev.Key)
	require.JSONEq(t, `{"customer_id":7002,"name":"Ravi Iyer","email":"ravi@example.com","phone":"+91 98200 22222","city":"Goa"}`, string(ev.Data))
	require.Regexp(t, `^imp:[0-9a-f]{32}$`, ev.ID)
}

// TestImportSampleSpreadsheet is the demo's import: the embedded XLSX, over
// JetStream; a second import is all duplicates.
func TestImportSampleSpreadsheet(t *testing.T) {
	js, names := cliServer(t, 4)
	ctx := context.Background()
	n, err := importSample(ctx, client.NewJetStream(js, names))
	require.NoError(t, err)
	require.Equal(t, 20, n)
	require.EqualValues(t, 20, storedEvents(t, js, names))
	_, err = importSample(ctx, client.NewJetStream(js, names))
	require.NoError(t, err)
	require.EqualValues(t, 20, storedEvents(t, js, names))

	// The committed XLSX and CSV samples hold the same rows.
	out, err := runCLI(t, "import", "testdata/import/customers.xlsx", "--type", "customer_signed_up", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "all 20 rows valid")
}

func TestImportConvert(t *testing.T) {
	for _, tc := range []struct {
		v, mapped, schema string
		want              any
		err               bool
	}{
		{"42", "", "integer", json.Number("42"), false},
		{"42.0", "", "integer", json.Number("42"), false},
		{"42.5", "", "integer", "42.5", false}, // kept: the schema names the problem
		{"abc", "", "integer", "abc", false},
		{"1.5", "", "number", json.Number("1.5"), false},
		{"yes", "", "boolean", true, false},
		{"0042", "", "string", "0042", false},
		{"0042", "string", "integer", "0042", false},
		{"x", "int", "", nil, true},
		{"2.25", "float", "", 2.25, false},
		{"N", "bool", "", false, false},
		{"maybe", "bool", "", nil, true},
		{"2026-03-01", "date", "", "2026-03-01", false},
		{"2026-03-01T10:00:00Z", "date", "", "2026-03-01", false},
		{"46082", "date", "", "2026-03-01", false}, // Excel serial day
		{"March", "date", "", nil, true},
	} {
		got, err := importConvert(tc.v, tc.mapped, tc.schema)
		if tc.err {
			require.Error(t, err, tc.v)
			continue
		}
		require.NoError(t, err, tc.v)
		require.Equal(t, tc.want, got, "%s as %s/%s", tc.v, tc.mapped, tc.schema)
	}
}

// FuzzImportCSV: any CSV input gives a table or an error, never a panic,
// and row numbers stay within the file.
func FuzzImportCSV(f *testing.F) {
	for _, s := range []string{"a,b\n1,2\n", "customer_id\n\"x\n", "\ufeffa\n\n\n1\n", "", "a,\"b\nc\",d\n1,2,3,4\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tbl, err := readImportTable("f.csv", strings.NewReader(s), "")
		if err != nil {
			return
		}
		for _, r := range tbl.Rows {
			if r.Num < 2 {
				t.Fatalf("row number %d", r.Num)
			}
		}
	})
}

// TestImportViaHTTP sends through the real ingest handler (which checks the
// schema again and derives nothing: keys are set); the token comes from the
// environment; a second run is all duplicates.
func TestImportViaHTTP(t *testing.T) {
	js, names := cliServer(t, 4)
	cat, err := loadCatalog(catalog.Config{})
	require.NoError(t, err)
	svc, err := ingest.New(ingest.Config{HTTPAddr: "", PublishTimeout: 2 * time.Second,
		Tokens: []ingest.Token{{Name: "agents", Token: "s3cret-token-for-agents"}}},
		ingest.Deps{NC: js.Conn(), JS: js, Names: names, Catalog: cat, Logger: zerolog.Nop()})
	require.NoError(t, err)
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)

	args := []string{"import", "testdata/import/customers.csv", "--type", "customer_signed_up", "--via", "http", "--url", srv.URL}
	_, err = runCLI(t, args...)
	require.ErrorIs(t, err, client.ErrRejected, "no token: rejected, not retried")
	require.Zero(t, storedEvents(t, js, names))

	t.Setenv("SLUICE_IMPORT_TOKEN", "s3cret-token-for-agents")
	out, err := runCLI(t, args...)
	require.NoError(t, err)
	require.Contains(t, out, ": 20 stored, 0 already stored")
	out, err = runCLI(t, append(args, "--progress")...) // the bar goes to stderr
	require.NoError(t, err)
	require.Contains(t, out, ": 0 stored, 20 already stored")
	require.EqualValues(t, 20, storedEvents(t, js, names))
}

// A file imported again after the events stream's duplicate window sends
// nothing twice: the import ledger (KV) remembers the rows stored, while
// the stream, here recreated, has forgotten their ids (issue 11: the rows
// were sent again). A changed row is a new row and is sent.
func TestImportAfterTheDuplicateWindowSendsNothingTwice(t *testing.T) {
	js, names := cliServer(t, 4)
	ctx := context.Background()
	src, err := os.ReadFile("testdata/import/customers.csv")
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "customers.csv")
	require.NoError(t, os.WriteFile(path, src, 0o644))
	out, err := runCLI(t, "import", path, "--type", "customer_signed_up")
	require.NoError(t, err)
	require.Contains(t, out, ": 20 stored, 0 already stored")

	// Past the duplicate window: a stream without the ids' dedupe entries.
	require.NoError(t, js.DeleteStream(ctx, names.EventsStream()))
	require.NoError(t, names.Ensure(ctx, js))
	out, err = runCLI(t, "import", path, "--type", "customer_signed_up")
	require.NoError(t, err)
	require.Contains(t, out, ": 0 stored, 20 already stored (duplicates), 20 of them not sent (imported before)")
	require.Zero(t, storedEvents(t, js, names))

	lines := strings.SplitN(string(src), "\n", 3)
	lines[1] = strings.Replace(lines[1], "@", "+changed@", 1)
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644))
	out, err = runCLI(t, "import", path, "--type", "customer_signed_up")
	require.NoError(t, err)
	require.Contains(t, out, ": 1 stored, 19 already stored")
	require.EqualValues(t, 1, storedEvents(t, js, names))
}
