package inbound_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
)

// Versions from the envelope: an older version is stale; an item without
// a version is applied in stream order with the stale guard off for it
// (version_policy optional, the default) and the entity keeps its stored
// version for later versioned items; with version_policy require such an
// item is parked.
func TestVersionPolicy(t *testing.T) {
	for _, policy := range []string{"", inbound.VersionRequire} {
		t.Run("policy="+policy, func(t *testing.T) {
			e := newEnv(t, sqliteDB)
			e.bareCRM(t)
			e.cfg.Sources[0].Envelope.Version = ".rev"
			typ := e.cfg.Types["contact_updated"]
			typ.VersionPolicy = policy
			e.cfg.Types["contact_updated"] = typ
			s, _ := e.start()
			for _, b := range []string{
				`[{"id":"42","status":"a","rev":2}]`,
				`[{"id":"42","status":"old","rev":1}]`,
				`[{"id":"42","status":"b"}]`,
				`[{"id":"42","status":"c","rev":1}]`,
			} {
				code, _ := postBare(t, s, []byte(b), "crm-secret")
				require.Equal(t, 202, code)
			}
			require.Eventually(t, func() bool {
				st := s.Stats()
				return st.Applied+st.Stale+st.Parked == 4
			}, 10*time.Second, 20*time.Millisecond)
			st := s.Stats()
			require.Equal(t, uint64(2), st.Stale, "%+v", st)
			var status string
			require.NoError(t, e.db.QueryRow("SELECT status FROM "+e.table("contacts")+" WHERE id = '42'").Scan(&status))
			if policy == inbound.VersionRequire {
				require.Equal(t, uint64(1), st.Parked)
				require.Equal(t, "a", status)
				require.Contains(t, e.parked(t, "*"), "version: required")
			} else {
				require.Equal(t, uint64(0), st.Parked)
				require.Equal(t, "b", status, "the unversioned update is applied in stream order")
			}
		})
	}
}
