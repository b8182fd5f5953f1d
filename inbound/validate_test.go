package inbound_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
)

// Every sample in schemas/inbound/testdata: valid ones pass and give their
// entity key, invalid ones fail with field errors.
func TestSampleTestdata(t *testing.T) {
	e := newEnv(t, sqliteDB)
	s, _ := e.start()
	for _, kind := range []string{"valid", "invalid"} {
		files, err := filepath.Glob(filepath.Join("..", "schemas", "inbound", "testdata", kind, "*.json"))
		require.NoError(t, err)
		require.NotEmpty(t, files)
		for _, f := range files {
			t.Run(kind+"/"+filepath.Base(f), func(t *testing.T) {
				raw, err := os.ReadFile(f)
				require.NoError(t, err)
				typ := strings.TrimSuffix(filepath.Base(f), ".json")
				key, err := s.Validate(typ, raw)
				if kind == "valid" {
					require.NoError(t, err)
					require.NotEmpty(t, key)
					return
				}
				var inv *inbound.Invalid
				require.ErrorAs(t, err, &inv)
				require.ErrorIs(t, err, inbound.ErrInvalid)
				require.GreaterOrEqual(t, len(inv.Fields), 2, "%v", inv.Fields)
			})
		}
	}
	_, err := s.Validate("deal_won", []byte(`{}`))
	require.ErrorIs(t, err, inbound.ErrUnknownType)
}

// A CRM retry after the JetStream dedupe window is stored again; the
// applied table recognises the webhook id (the same path as a redelivery
// after a crash between commit and ack) and nothing is written twice.
func TestRetryAfterDedupeWindowIsNotAppliedTwice(t *testing.T) {
	e := newEnv(t, sqliteDB)
	tc := e.names.Config()
	tc.DuplicateWindow = time.Second
	e.names = topologyNew(tc)
	s, _ := e.start()
	body := mustJSON(noteItem("late", 1, "once"))
	code, _ := post(t, s, "d1", body)
	require.Equal(t, 202, code)
	e.settled(1)
	time.Sleep(1100 * time.Millisecond) // let the dedupe window pass
	code, r := post(t, s, "d1", body)
	require.Equal(t, 202, code)
	require.Equal(t, 0, r.Duplicates, "stored again: the window has passed")
	require.Eventually(t, func() bool { return s.Stats().Redelivered == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, e.count("lead_notes", ""))
	require.Equal(t, 1, e.count("applied", ""))
}

func TestConfigValidateNamesKeys(t *testing.T) {
	good := inbound.Config{Sources: []inbound.Source{{Secrets: []string{secret}}},
		DB: productdbConfig("x.db")}.WithDefaults()
	require.NoError(t, good.Validate())
	require.Equal(t, "127.0.0.1:8081", good.HTTPAddr)
	require.Equal(t, "/v1/crm/webhooks", good.Sources[0].Path)
	require.Equal(t, 5*time.Minute, good.Tolerance)
	for _, tc := range []struct {
		name string
		mut  func(*inbound.Config)
		key  string
	}{
		{"no sources", func(c *inbound.Config) { c.Sources = nil }, "inbound.sources"},
		{"no secret", func(c *inbound.Config) { c.Sources[0].Secrets = nil }, "inbound.sources[0]: secrets"},
		{"bad whsec", func(c *inbound.Config) { c.Sources[0].Secrets = []string{"whsec_!!"} }, "inbound.sources[0]: secrets[0]"},
		{"scheme", func(c *inbound.Config) { c.Sources[0].Scheme = "md5" }, "inbound.sources[0]: scheme"},
		{"addr", func(c *inbound.Config) { c.HTTPAddr = "nope" }, "inbound.http_addr"},
		{"driver", func(c *inbound.Config) { c.DB.Driver = "oracle" }, "inbound.db.driver"},
		{"dsn", func(c *inbound.Config) { c.DB.DSN = "" }, "inbound.db.dsn"},
		{"table", func(c *inbound.Config) { c.AppliedTable = "x; DROP" }, "inbound.applied_table"},
		{"body", func(c *inbound.Config) { c.MaxBodyBytes = 10 }, "inbound.max_body_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			c.Sources = append([]inbound.Source(nil), good.Sources...)
			tc.mut(&c)
			require.ErrorContains(t, c.Validate(), tc.key)
		})
	}
}

func TestCatalogErrorsNameTheKey(t *testing.T) {
	e := newEnv(t, sqliteDB)
	typ := e.cfg.Types["note_added"]
	typ.Write.Table = "notes; DROP TABLE leads"
	typ.Write.Key = []string{"nope"}
	typ.Checks = append(typ.Checks, inbound.Check{Name: "c", Value: ".[", Enum: []any{1}})
	e.cfg.Types = map[string]inbound.Type{"note_added": typ, "ghost": {Key: ".id", Write: inbound.Write{Table: "t", Key: []string{"id"}, Columns: map[string]string{"id": ".id"}}}}
	_, err := inbound.New(e.cfg, depsFor(t, e))
	require.Error(t, err)
	for _, want := range []string{"inbound.types.note_added.write.table", "inbound.types.note_added.write.key",
		"inbound.types.note_added.checks[2].value", "inbound.types.ghost.schema"} {
		require.ErrorContains(t, err, want)
	}
	require.False(t, errors.Is(err, inbound.ErrStarted))
}
