package dispatcher

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
)

// PreviewRequests shows the headers the dispatcher really sends (names,
// and values where not secret), and no secret.
func TestPreviewMatchesWhatIsSent(t *testing.T) {
	var got http.Header
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	cfg := CRMConfig{URL: srv.URL, Timeout: 5 * time.Second,
		Headers: map[string]string{"Accept": "application/json", "X-Api-Key": "s3cret-key"},
		Auth:    AuthConfig{Type: AuthBasic, Username: "u", Password: "s3cret-pw"}}
	r := crmreq.Request{EventID: "e-1", Type: "t", Key: "k:1", OccurredAt: time.Date(2026, 12, 6, 4, 0, 0, 5, time.UTC),
		Mode: catalog.ModeUpsert, Object: "contacts", IDKey: "k:1", Method: "POST", Path: "/c",
		UpdateMethod: "PUT", UpdatePath: "/c/{crm_id}", Body: []byte(`{"a":1}`)}
	c := newCRMClient(cfg, nil, 1)
	defer c.close()
	if _, err := c.do(context.Background(), r, r.Method, r.Path); err != nil {
		t.Fatal(err)
	}
	ps := PreviewRequests(cfg, r)
	if len(ps) != 2 || ps[0].Method != "POST" || ps[0].URL != srv.URL+"/c" || ps[1].Method != "PUT" ||
		ps[1].URL != srv.URL+"/c/{crm_id}" || string(ps[0].Body) != body {
		t.Fatalf("previews %+v", ps)
	}
	sent, shown := names(got), names(ps[0].Header)
	if len(sent) != len(shown) {
		t.Fatalf("sent headers %v, preview %v", sent, shown)
	}
	for i := range sent {
		if sent[i] != shown[i] {
			t.Fatalf("sent headers %v, preview %v", sent, shown)
		}
	}
	for k, v := range ps[0].Header {
		switch k {
		case "X-Api-Key", "Authorization":
			if v[0] != Redacted {
				t.Errorf("%s shown: %q", k, v[0])
			}
		default:
			if got.Get(k) != v[0] {
				t.Errorf("%s: preview %q, sent %q", k, v[0], got.Get(k))
			}
		}
	}
}

// names lists header names without the transport's own.
func names(h http.Header) []string {
	var out []string
	for k := range h {
		if k != "Accept-Encoding" && k != "Content-Length" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
