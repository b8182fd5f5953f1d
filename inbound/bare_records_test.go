package inbound_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
	"sluice.dev/mesh/productdb"
)

// bareCRM is the inbound config of a CRM like the one of issue 13 (and
// crmsim's webhook profile): a JSON array of bare records with only the
// changed fields, no type, no version, no delivery id, signed
// base64("<webhook id>:" + raw HMAC-SHA256 of the body).
func (e *env) bareCRM(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "contact_updated.json"), []byte(`{
		"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["id"],
		"properties": {"id": {"type": "string", "minLength": 1}, "status": {"type": ["string", "null"], "maxLength": 40}}}`), 0o600))
	_, err := e.db.Exec(fmt.Sprintf(`CREATE TABLE contacts_%s (id VARCHAR(40) PRIMARY KEY, status VARCHAR(40) NULL,
		description VARCHAR(200) NULL, owner VARCHAR(100) NULL)`, e.sfx))
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = e.db.Exec("DROP TABLE IF EXISTS " + e.table("contacts")) })
	e.cfg.SchemasDir = dir
	e.cfg.Types = map[string]inbound.Type{"contact_updated": {
		Write: inbound.Write{Table: e.table("contacts"), Key: []string{"id"}, SkipAbsent: true,
			Columns: map[string]string{"id": ".id", "status": ".status", "description": ".description", "owner": ".owner"}},
	}}
	e.cfg.Sources = []inbound.Source{{Name: "crm", Scheme: inbound.SchemeHMAC, Secrets: []string{"crm-secret"},
		Signature: inbound.Signature{Header: "X-CRM-Signature", Encoding: "base64", Embed: "{header:X-CRM-Webhook-Id}:{mac}"},
		Envelope:  &inbound.Envelope{Items: ".[]", Type: `"contact_updated"`, Key: `"contact:" + .id`}}}
}

func postBare(t *testing.T, s *inbound.Service, body []byte, secret string) (int, inbound.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+s.Addr()+inbound.DefaultPath, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("X-CRM-Webhook-Id", "hook-7")
	req.Header.Set("X-CRM-Signature", inbound.SignEmbedded(secret, body, "hook-7:"))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var r inbound.Response
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return resp.StatusCode, r
}

// TestBareRecordCRM: every authenticated delivery is answered 2xx; every
// update is either written (absent fields untouched, explicit null
// written, no version needed, repeated record ids with new content
// applied in order) or parked with the raw body and the reason; a CRM
// retry is a duplicate; a tampered body is 401. On SQLite, and PostgreSQL
// and MySQL when their DSNs are set.
func TestBareRecordCRM(t *testing.T) {
	for _, target := range allDBs {
		t.Run(target.driver, func(t *testing.T) {
			e := newEnv(t, target)
			e.bareCRM(t)
			s, _ := e.start()
			deliveries := []struct {
				body              string
				items, unreadable int
			}{
				{`[{"id":"42","status":"new","description":"first","owner":"ana"},{"id":"43","status":"new"}]`, 2, 0},
				{`[{"id":"42","description":"edited description only"}]`, 1, 0},
				{`[{"id":"42","status":"won"},{"id":"42","owner":null}]`, 2, 0},
				{`[{"id":"43"}]`, 1, 0},
				{`[{"id":"42","status":"new"}]`, 1, 0}, // 42 back to status new
				{`[{"status":"no id"}]`, 1, 0},         // key "contact:", schema: parked by the writer
				{`[{"id":"44","status":"` + string(bytes.Repeat([]byte("x"), 50)) + `"}]`, 1, 0}, // schema: parked by the writer
				{`not json at all`, 1, 1},
				{`{"id":"45","status":"an object, not an array"}`, 2, 2}, // .[] gives the values: parked
				{`[]`, 1, 1},
			}
			items := 0
			for i, d := range deliveries {
				code, r := postBare(t, s, []byte(d.body), "crm-secret")
				require.Equal(t, 202, code, "delivery %d", i)
				require.Equal(t, d.items, r.Accepted, "delivery %d", i)
				require.Equal(t, d.unreadable, r.Unreadable, "delivery %d", i)
				items += d.items
			}
			// The CRM retries the first delivery: a duplicate, nothing new.
			code, r := postBare(t, s, []byte(deliveries[0].body), "crm-secret")
			require.Equal(t, 202, code)
			require.Equal(t, 2, r.Duplicates)
			// Tampered or wrongly signed: 401, nothing stored.
			code, _ = postBare(t, s, []byte(`[{"id":"42","status":"lost"}]`), "wrong-secret")
			require.Equal(t, 401, code)
			require.Equal(t, uint64(1), s.Stats().Unauthorized)

			// Every item is settled: applied (or skipped as unchanged) or parked.
			require.Eventually(t, func() bool {
				st := s.Stats()
				return int(st.Applied+st.Unchanged)+lanesParked(s) == items
			}, 20*time.Second, 20*time.Millisecond)
			st := s.Stats()
			require.Equal(t, uint64(7), st.Applied+st.Unchanged, "%+v", st)
			require.Equal(t, uint64(0), st.Stale)

			row := func(id string) (status, desc, owner sql.NullString) {
				q := "SELECT status, description, owner FROM " + e.table("contacts") + " WHERE id = " + e.ph()
				require.NoError(t, e.db.QueryRow(q, id).Scan(&status, &desc, &owner))
				return
			}
			status, desc, owner := row("42")
			require.Equal(t, "new", status.String, "the last update wins, in order")
			require.Equal(t, "edited description only", desc.String, "absent in later updates: untouched")
			require.False(t, owner.Valid, "an explicit null is written")
			status, desc, _ = row("43")
			require.Equal(t, "new", status.String, "an update with no field besides the id changes nothing")
			require.False(t, desc.Valid)
			require.Equal(t, 0, e.count("contacts", "id = "+e.ph(), "44"), "invalid: parked, not written")

			// The parked items carry the raw body (or item) and the reason.
			all := e.parked(t, "*")
			for _, want := range []string{"not json at all", `{"status":"no id"}`, "envelope.items gave no item",
				"unreadable webhook", "invalid webhook", inbound.HeaderSource + ": crm"} {
				require.Contains(t, all, want)
			}
		})
	}
}

// TestBareRecordsNeedTheEnvelope: the same CRM on the default envelope
// (today's {type,id} shape) loses nothing either: its items have no type,
// so they are stored and parked, not refused.
func TestBareRecordsNeedTheEnvelope(t *testing.T) {
	e := newEnv(t, sqliteDB)
	e.bareCRM(t)
	e.cfg.Sources[0].Envelope = nil
	s, _ := e.start()
	code, r := postBare(t, s, []byte(`[{"id":"42","status":"won"},{"id":"43","status":"new"}]`), "crm-secret")
	require.Equal(t, 202, code)
	require.Equal(t, 2, r.Unreadable)
	require.Eventually(t, func() bool { return lanesParked(s) == 2 }, 10*time.Second, 20*time.Millisecond)
	require.Contains(t, e.parked(t, "_unrouted"), `"type","reason":"required"`)
	_ = context.Background
	_ = productdb.Config{}
}
