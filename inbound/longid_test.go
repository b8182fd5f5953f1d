package inbound_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
)

// A signed request whose delivery id cannot be stored (a webhook-id of
// 64 KB does not fit a JetStream message header) is refused with a 4xx that
// says why: a retry would fail the same way, so it must not get the 503
// that asks the CRM to retry forever (issue 11). An item id that long is
// the body's shape: the item is kept, to be parked (202).
func TestUnstorableIDIsRefusedPermanently(t *testing.T) {
	e := newEnv(t, sqliteDB)
	s, _ := e.start()
	long := strings.Repeat("i", 64<<10)
	for _, tc := range []struct {
		name, delivery string
		body           []byte
		status         int
		why            string
	}{
		{"webhook-id of 64 KB", long, mustJSON(statusItem("wh-1", 1, "contacted", time.Now(), actor("user", "a"))),
			http.StatusRequestHeaderFieldsTooLarge, "longer than 1024 bytes"},
		{"webhook-id of 1024 bytes", long[:1024], mustJSON(statusItem("wh-2", 1, "contacted", time.Now(), actor("user", "a"))),
			http.StatusAccepted, ""},
		{"item id of 64 KB", "d-1", mustJSON(statusItem(long, 1, "contacted", time.Now(), actor("user", "a"))),
			http.StatusAccepted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, "http://"+s.Addr()+inbound.DefaultPath, bytes.NewReader(tc.body))
			require.NoError(t, err)
			require.NoError(t, inbound.SignHeaders(req.Header, secret, tc.delivery, time.Now(), tc.body))
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode, string(b))
			require.Empty(t, resp.Header.Get("Retry-After"), "not a transient error")
			var r inbound.Response
			require.NoError(t, json.Unmarshal(b, &r))
			if tc.why != "" {
				require.Contains(t, r.Error, tc.why)
			}
		})
	}
}
