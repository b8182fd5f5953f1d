package inbound_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

func forEachDB(t *testing.T, f func(t *testing.T, e *env)) {
	for _, target := range allDBs {
		t.Run(target.driver, func(t *testing.T) { f(t, newEnv(t, target)) })
	}
}

// Every note is posted twice and the writer is killed (connection closed,
// stopped with a cancelled context) while it is working through them; a
// new writer finishes. Each note is in the database exactly once.
func TestExactlyOnceWithDuplicatesAndKilledWriter(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		const n = 120
		s1, nc1 := e.start()
		var batches [][]map[string]any
		for i := 0; i < n; i += 10 {
			var b []map[string]any
			for j := i; j < i+10; j++ {
				b = append(b, noteItem("n"+strconv.Itoa(j), 1+j%3, "note "+strconv.Itoa(j)))
			}
			batches = append(batches, b)
		}
		for i, b := range batches {
			for range 2 { // the CRM retries every request
				code, _ := post(t, s1, "d"+strconv.Itoa(i), mustJSON(b))
				require.Equal(t, 202, code)
			}
		}
		require.Eventually(t, func() bool { return e.count("lead_notes", "") >= n/4 }, 20*time.Second, 5*time.Millisecond)
		nc1.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s1.Stop(ctx)
		require.Less(t, e.count("lead_notes", ""), n, "the writer must be killed mid-way")

		s2, _ := e.start()
		for i, b := range batches[len(batches)-2:] { // and the CRM retries some again, later
			code, r := post(t, s2, "d"+strconv.Itoa(i), mustJSON(b))
			require.Equal(t, 202, code)
			require.Equal(t, 10, r.Duplicates)
		}
		e.settled(n)
		require.Equal(t, n, e.count("lead_notes", ""))
		for j := 0; j < n; j++ {
			require.Equal(t, 1, e.count("lead_notes", "id = "+e.ph(), "note_n"+strconv.Itoa(j)))
		}
		require.Equal(t, n, e.count("applied", "outcome = "+e.ph(), inbound.OutcomeApplied))
	})
}

// Each invalid item is parked with every problem and its original body,
// an alert is published, nothing reaches the database and the lane goes on.
func TestInvalidItemsAreParkedAndNothingIsWritten(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		s, _ := e.start()
		now := time.Now()
		bogus := statusItem("bogus", 1, "won", now, actor("user", "a"))
		bogus["data"].(map[string]any)["status"] = "bogus"
		noDate := apptItem("bad-appt", 7, 1, 1, "")
		delete(noDate["data"].(map[string]any), "scheduled_at")
		cases := []struct {
			item   map[string]any
			reason string
			fields []string
		}{
			{bogus, "invalid webhook", []string{"item.data.status"}},
			{noDate, "invalid webhook", []string{"item.data.location", "item.data.scheduled_at"}},
			{statusItem("no-lead", 999, "won", now, actor("user", "a")), "invalid webhook", []string{"checks.lead_exists"}},
			{noteItem("robot", 3, "x"), "invalid webhook", []string{"checks.author_kind"}},
			{map[string]any{"id": "unknown", "type": "deal_won", "data": map[string]any{}}, "unknown type", []string{"item"}},
		}
		cases[3].item["actor"] = actor("integration", "zapier")
		for _, c := range cases {
			code, _ := post(t, s, "d-"+c.item["id"].(string), mustJSON(c.item))
			require.Equal(t, 202, code)
		}
		code, _ := post(t, s, "d-ok", mustJSON(noteItem("after", 2, "the lane goes on")))
		require.Equal(t, 202, code)
		e.settled(1)
		require.Equal(t, 1, e.count("lead_notes", ""))
		require.Equal(t, 0, e.count("appointments", ""))
		require.Equal(t, 0, e.count("versions", "entity <> "+e.ph(), "lead:2"))
		require.Equal(t, "new", e.leadStatus(1))

		ctx := context.Background()
		ps, err := e.js.Stream(ctx, e.names.ParkedStream())
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			info, err := ps.Info(ctx)
			return err == nil && info.State.Msgs == uint64(len(cases))
		}, 10*time.Second, 20*time.Millisecond)
		for _, c := range cases {
			typ := c.item["type"].(string)
			key := "_unrouted"
			if typ == "lead_status_changed" || typ == "note_added" {
				key = fmt.Sprintf("lead:%v", c.item["data"].(map[string]any)["lead_id"])
			} else if typ == "appointment_booked" {
				key = "appointment:7"
			}
			pm, err := ps.GetLastMsgForSubject(ctx, e.names.ParkedSubject(topology.StageInbound, typ, topology.KeyToken(key)))
			require.NoError(t, err, c.item["id"])
			require.JSONEq(t, string(mustJSON(c.item)), string(pm.Data))
			require.Equal(t, c.reason, pm.Header.Get(lane.HeaderParkReason))
			var fields []inbound.FieldError
			require.NoError(t, json.Unmarshal([]byte(pm.Header.Get(inbound.HeaderErrors)), &fields))
			var got []string
			for _, f := range fields {
				got = append(got, f.Field)
			}
			require.Equal(t, c.fields, got, "%s: %v", c.item["id"], fields)
		}
		as, err := e.js.Stream(ctx, e.names.AlertsStream())
		require.NoError(t, err)
		info, err := as.Info(ctx)
		require.NoError(t, err)
		require.GreaterOrEqual(t, info.State.Msgs, uint64(len(cases)))
		require.Equal(t, uint64(len(cases)), s.Stats().Parked)
	})
}

// An older update arriving after a newer one is recorded as stale and not
// written, for a time version (leads) and a revision number (appointments).
func TestStaleUpdateDoesNotOverwrite(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		s, _ := e.start()
		t0 := time.Now().Add(-time.Hour)
		items := []map[string]any{
			statusItem("s2", 1, "won", t0.Add(2*time.Minute), actor("user", "a")),
			statusItem("s1", 1, "lost", t0.Add(time.Minute), actor("user", "b")),
			apptItem("a3", 5, 1, 3, "Pune showroom"),
			apptItem("a2", 5, 1, 2, "Home visit"),
			apptItem("a10", 5, 1, 10, "Video call"), // 10 > 3 numerically, not as text
		}
		code, _ := post(t, s, "d-stale", mustJSON(items))
		require.Equal(t, 202, code)
		e.settled(len(items))
		require.Equal(t, "won", e.leadStatus(1))
		require.Equal(t, 1, e.count("appointments", "location = "+e.ph(), "Video call"))
		require.Equal(t, 2, e.count("applied", "outcome = "+e.ph(), inbound.OutcomeStale))
		require.Eventually(t, func() bool { return s.Stats().Stale == 2 }, 5*time.Second, 10*time.Millisecond) // counted just after the commit
	})
}

// Loop prevention: an item whose actor is Sluice's integration echoes our
// own outbound change and is not applied; an item with the same values as
// the last applied ones is skipped as unchanged.
func TestEchoIsNotApplied(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		s, _ := e.start()
		t0 := time.Now().Add(-time.Hour)
		items := []map[string]any{
			statusItem("e1", 3, "negotiating", t0, actor("integration", "sluice")),
			statusItem("e2", 3, "contacted", t0.Add(time.Minute), actor("user", "a")),
			statusItem("e3", 3, "contacted", t0.Add(2*time.Minute), actor("automation", "nightly sync")),
		}
		code, _ := post(t, s, "d-echo", mustJSON(items))
		require.Equal(t, 202, code)
		e.settled(3)
		require.Equal(t, "contacted", e.leadStatus(3))
		for id, want := range map[string]string{"e1": inbound.OutcomeEcho, "e2": inbound.OutcomeApplied, "e3": inbound.OutcomeUnchanged} {
			require.Equal(t, 1, e.count("applied", "webhook_id = "+e.ph()+" AND outcome = '"+want+"'", "crm:"+id), id)
		}
		// The counters move just after each commit the applied table shows.
		require.Eventually(t, func() bool {
			st := s.Stats()
			return st.Echo == 1 && st.Unchanged == 1 && st.Applied == 1
		}, 5*time.Second, 10*time.Millisecond, "%+v", s.Stats())
	})
}

// The database goes away for a while: the lane holds and retries (nothing
// parked), and once it is back everything is written, in order.
func TestDatabaseOutageThenRestoreWritesEverythingInOrder(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		down, up := e.outage()
		s, _ := e.start(e.viaOutageDSN)
		t0 := time.Now().Add(-time.Hour)
		statuses := []string{"contacted", "test_drive_scheduled", "negotiating", "lost", "won"}
		down()
		for i, st := range statuses {
			code, _ := post(t, s, "o"+strconv.Itoa(i), mustJSON([]map[string]any{
				statusItem("o"+strconv.Itoa(i), 2, st, t0.Add(time.Duration(i)*time.Minute), actor("user", "a")),
				noteItem("p"+strconv.Itoa(i), 2, "step "+strconv.Itoa(i)),
			}))
			require.Equal(t, 202, code, "the receiver does not need the database")
		}
		require.Eventually(t, func() bool { return s.Stats().DBErrors >= 3 }, 10*time.Second, 10*time.Millisecond)
		require.Equal(t, uint64(0), s.Stats().Parked)
		up()
		e.settled(2 * len(statuses))
		require.Equal(t, "won", e.leadStatus(2))
		require.Equal(t, uint64(0), s.Stats().Parked)
		// In order: the applied table was filled in stream order.
		rows, err := e.db.Query("SELECT webhook_id FROM " + e.table("applied") + " ORDER BY applied_at, webhook_id")
		require.NoError(t, err)
		defer rows.Close()
		var got []string
		for rows.Next() {
			var id string
			require.NoError(t, rows.Scan(&id))
			got = append(got, id)
		}
		require.NoError(t, rows.Err())
		require.Len(t, got, 2*len(statuses))
		for i := range statuses {
			require.Equal(t, "crm:o"+strconv.Itoa(i), got[i*2], "%v", got)
		}
	})
}
