package dispatcher

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
)

func requestFiles(t testing.TB) map[string][]byte {
	paths, err := filepath.Glob("testdata/requests/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		out[filepath.Base(p)] = b
	}
	return out
}

func TestDecodeRequestFiles(t *testing.T) {
	for name, b := range requestFiles(t) {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeRequest(b)
			if strings.HasPrefix(name, "valid_") {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrUndecodable)
			}
		})
	}
}

func TestDecodeRequestDefaults(t *testing.T) {
	r, err := DecodeRequest(requestFiles(t)["valid_upsert_defaults.json"])
	require.NoError(t, err)
	require.Equal(t, "POST", r.Method)
	require.Equal(t, "PATCH", r.UpdateMethod)
	require.Equal(t, ".id", r.IDFrom)
	require.Equal(t, "ü ser.1", r.IDKey)
	r, err = DecodeRequest([]byte(`{"event_id":"e","type":"t","key":"k","path":"/x","body":null}`))
	require.NoError(t, err)
	require.Equal(t, catalog.ModeSend, r.Mode)
}

var kvKeyRe = regexp.MustCompile(`^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$`)

// FuzzDecodeRequest checks that whatever DecodeRequest accepts can be sent:
// its URL stays on the CRM host, its headers are valid, its KV key is
// valid, and it survives a round trip.
func FuzzDecodeRequest(f *testing.F) {
	for _, b := range requestFiles(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			require.ErrorIs(t, err, ErrUndecodable)
			return
		}
		paths := []string{r.Path}
		if r.Mode == catalog.ModeUpdate || r.Mode == catalog.ModeUpsert {
			paths = append(paths, strings.ReplaceAll(r.UpdatePath, "{crm_id}", url.PathEscape("a/b ?#c")))
		}
		if r.Mode == catalog.ModeUpdate {
			paths = paths[1:]
		}
		for _, p := range paths {
			req, err := http.NewRequest(r.Method, "https://crm.test/api"+p, nil)
			require.NoError(t, err, p)
			require.Equal(t, "crm.test", req.URL.Host, p)
			require.True(t, strings.HasPrefix(req.URL.EscapedPath(), "/api/"), p)
		}
		for _, v := range []string{r.EventID, r.Type, r.Key} {
			require.True(t, validHeaderValue(v), "%q", v)
		}
		if r.Mode != catalog.ModeSend {
			require.Regexp(t, kvKeyRe, kvKey(r.Object, r.IDKey))
		}
		again, err := json.Marshal(r)
		require.NoError(t, err)
		r2, err := DecodeRequest(again)
		require.NoError(t, err)
		third, err := json.Marshal(r2)
		require.NoError(t, err)
		require.Equal(t, string(again), string(third))
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{" 5 ", 5 * time.Second, true},
		{"120", 2 * time.Minute, true},
		{"99999999999999999999999", MaxRetryAfter, true},
		{"7200", MaxRetryAfter, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"Wed, 25 Nov 2026 10:00:30 GMT", 30 * time.Second, true},
		{"Wednesday, 25-Nov-26 10:01:00 GMT", time.Minute, true},
		{"Wed Nov 25 10:00:10 2026", 10 * time.Second, true},
		{"Wed, 25 Nov 2026 09:00:00 GMT", 0, true},
		{"Fri, 25 Dec 2026 10:00:00 GMT", MaxRetryAfter, true},
	}
	for _, tc := range cases {
		got, ok := ParseRetryAfter(tc.in, now)
		require.Equal(t, tc.ok, ok, "%q", tc.in)
		require.Equal(t, tc.want, got, "%q", tc.in)
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "5", "120", "99999999999999999999", "-3", "Wed, 25 Nov 2026 10:00:30 GMT",
		"Wednesday, 25-Nov-26 10:01:00 GMT", "Wed Nov 25 10:00:10 2026", "\t7\r\n"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, MaxRetryAfter)
		if !ok {
			require.Zero(t, d)
		}
	})
}

func TestHeaderSafe(t *testing.T) {
	require.Equal(t, "a  c", headerSafe("a\r\nc", 10))
	require.Equal(t, "\uFFFDx", headerSafe("\xffx", 10))
	s := headerSafe(strings.Repeat("é", 10), 5) // 2-byte runes: cut at 4
	require.Equal(t, "éé", s)
	require.True(t, utf8.ValidString(s))
}

func TestExtractID(t *testing.T) {
	cases := []struct {
		expr, body, want string
	}{
		{".id", `{"id":"abc"}`, "abc"},
		{".id", `{"id":12345678901234567890}`, "12345678901234567890"},
		{".id", `{"id":42}`, "42"},
		{".data[0].id", `{"data":[{"id":"x/y"}]}`, "x/y"},
		{".id | tostring", `{"id":7}`, "7"},
		{".id", `{"id":null}`, ""},
		{".id", `{"id":""}`, ""},
		{".id", `{"id":{"a":1}}`, ""},
		{".id", `not json`, ""},
		{".id", ``, ""},
		{"empty", `{}`, ""},
		{"error(\"x\")", `{}`, ""},
		{".id", `[1]`, ""},
	}
	var c jqCache
	for _, tc := range cases {
		code, err := c.get(tc.expr)
		require.NoError(t, err)
		id, err := extractID(context.Background(), code, []byte(tc.body))
		if tc.want == "" {
			require.ErrorIs(t, err, ErrNoIDInResponse, "%s on %s", tc.expr, tc.body)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, id)
	}
	_, err := c.get(".id |||")
	require.ErrorIs(t, err, ErrUndecodable)
	a, _ := c.get(".id")
	b, _ := c.get(".id")
	require.Same(t, a, b, "compiled once")
}

// The request a dispatch message decodes to is the one the enricher
// publishes: crmreq.Request marshals to what DecodeRequest accepts.
func TestDecodeRequestRoundTrip(t *testing.T) {
	in := crmreq.Request{EventID: "e1", Type: "t", Key: "k.1", Mode: "create", Object: "contacts",
		Method: "PUT", Path: "/c", IDFrom: ".id", Body: json.RawMessage(`{"a":1}`)}
	b, err := json.Marshal(in)
	require.NoError(t, err)
	out, err := DecodeRequest(b)
	require.NoError(t, err)
	in.IDKey, in.UpdateMethod = "k.1", "PATCH"
	require.Equal(t, in, out)
}

// TestFieldMatchers checks the hand-written matchers against the regular
// expressions they replace.
func TestFieldMatchers(t *testing.T) {
	cases := []struct {
		re    *regexp.Regexp
		match func(string) bool
	}{
		{regexp.MustCompile(`^[!-~]{1,128}$`), validEventID},
		{regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`), validType},
		{regexp.MustCompile(`^[A-Z]{1,16}$`), validMethod},
		{regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}$`), validObject},
	}
	inputs := []string{"", "a", "A", "POST", "post", "PATCHPATCHPATCHPA", "PATCHPATCHPATCHP", "contacts",
		"crm.contacts", "a.b.c.d", "a.b.c.d.e", ".a", "a.", "a..b", "a-b_c.D9", "a b", "é", "x\n", "~!",
		"r1:evt-000001", strings.Repeat("x", 64), strings.Repeat("x", 65), strings.Repeat("x", 128),
		strings.Repeat("x", 129), strings.Repeat("x", 64) + "." + strings.Repeat("y", 65), "\x7f", " "}
	for i, c := range cases {
		for _, in := range inputs {
			require.Equal(t, c.re.MatchString(in), c.match(in), "matcher %d on %q", i, in)
		}
	}
}
