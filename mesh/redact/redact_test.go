package redact_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/redact"
)

func TestSensitive(t *testing.T) {
	r := redact.New("Email", " phone ")
	for _, tc := range []struct {
		name string
		want bool
	}{
		// the names, and the built-in substrings
		{"user_password", true}, {"pwd", true}, {"PWD", true}, {"passcode", true}, {"db_pass", true},
		{"password", true}, {"Authorization", true}, {"x-auth-token", true}, {"client_secret", true},
		{"refresh_token", true}, {"credentials", true}, {"Set-Cookie", true}, {"credit_card_number", true},
		{"cvv", true}, {"webhook-signature", true}, {"private_notes", true},
		// ssn is a word, not three letters anywhere
		{"ssn", true}, {"SSN", true}, {"customer_ssn", true}, {"ssnLast4", true}, {"social_security_no", true},
		{"business_name", false}, {"address_number", false}, {"classname", false},
		// secret keys versus the entity key and routing keys
		{"api_key", true}, {"apiKey", true}, {"APIKey", true}, {"x-api-key", true}, {"apikey", true},
		{"private_key", true}, {"accessKey", true}, {"ssh-key", true}, {"signing_key", true}, {"secret_key", true},
		{"key", false}, {"Key", false}, {"idempotency_key", false}, {"partition_key", false},
		{"key_column", false}, {"sort_key", false}, {"keys", false}, {"monkey", false},
		// configured names: whole, any case
		{"email", true}, {"EMAIL", true}, {"phone", true}, {"email_verified", false}, {"name", false},
		{"city", false}, {"customer_id", false},
	} {
		require.Equal(t, tc.want, r.Sensitive(tc.name), tc.name)
	}
	require.False(t, redact.Default.Sensitive("email"), "only configured names beyond the rules")
	var nilR *redact.Redactor
	require.True(t, nilR.Sensitive("password"))
}

func TestJSON(t *testing.T) {
	r := redact.New("email")
	doc := `{"key":"customer:7","user_password":"hunter2-PLAIN","pwd":"hunter2-PLAIN","passcode":"1234",
		"db_pass":"hunter2-PLAIN","email":"priya@example.in","api_key":"k-1","idempotency_key":"evt-1",
		"nested":[{"Email":"a@b.c","card":{"number":"4111"}}],"n":12345678901234567890}`
	got := string(r.JSON([]byte(doc)))
	for _, leak := range []string{"hunter2-PLAIN", "1234\"", "priya@example.in", "a@b.c", "k-1", "4111"} {
		require.NotContains(t, got, leak)
	}
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(got), &v))
	require.Equal(t, "customer:7", v["key"])
	require.Equal(t, "evt-1", v["idempotency_key"])
	require.Equal(t, redact.Redacted, v["user_password"])
	require.Contains(t, got, "12345678901234567890", "numbers keep every digit")
	require.Equal(t, `"[not JSON, 5 bytes: not shown]"`, string(r.JSON([]byte("hello"))))
	require.Nil(t, r.JSON([]byte("  ")))
}

func TestText(t *testing.T) {
	r := redact.New("email")
	for _, tc := range []struct{ in, want string }{
		{`crm said: {"email":"priya@example.in","password":"hunter2-PLAIN"} exists`,
			`crm said: {"email":"[redacted]","password":"[redacted]"} exists`},
		{`login failed user=ann db_pass=hunter2-PLAIN pwd: s3cr3t`, `login failed user=ann db_pass=[redacted] pwd: [redacted]`},
		{`contact priya@example.in please`, `contact [redacted] please`},
		{`expected an object but got: string ("priya@exa ...")`, `expected an object but got: string ([redacted])`},
		{`cannot add: number (12) and object ({"a":1})`, `cannot add: number ([redacted]) and object ([redacted])`},
		{`key: customer:7 stage: dispatcher`, `key: customer:7 stage: dispatcher`},
		{`data.user_password: required; data.email: is not a valid email`, `data.user_password: required; data.email: is not a valid email`},
		{`data.email: priya`, `data.email: [redacted]`},
		{"", ""},
	} {
		got := r.Text(tc.in)
		require.Equal(t, tc.want, got, tc.in)
		require.NotContains(t, got, "hunter2-PLAIN")
	}
}

// FuzzText: Text never panics, is idempotent, and no sensitive pair's
// value survives it.
func FuzzText(f *testing.F) {
	f.Add("password=hunter2-PLAIN", "x")
	f.Add(`{"pwd":"a\"b"}`, "pwd")
	f.Add(`string ("a(b")`, "")
	f.Fuzz(func(t *testing.T, s, field string) {
		r := redact.New(field)
		once := r.Text(s)
		if !strings.Contains(s, redact.Redacted) {
			require.Equal(t, once, r.Text(once), "idempotent")
		}
		const secret = "hunter2PLAINzz"
		require.NotContains(t, r.Text(s+` db_pass=`+secret), secret)
	})
}

func TestBody(t *testing.T) {
	r := redact.New("email")
	require.Equal(t, `{"email":"[redacted]","n":1}`, r.Body([]byte(`{"email":"priya@example.in","n":1}`)))
	require.Equal(t, `k-0`, r.Body([]byte(`k-0`)))
	require.Equal(t, `user=ann&db_pass=[redacted]&to=[redacted]`, r.Body([]byte(`user=ann&db_pass=hunter2-PLAIN&to=priya@example.in`)))
}
