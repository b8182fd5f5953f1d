package dispatcher

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFindID(t *testing.T) {
	for _, tc := range []struct {
		expr, body, want string
		err              bool
	}{
		{".data[0].id // empty", `{"data":[{"id":"deals-7"}]}`, "deals-7", false},
		{".data[0].id // empty", `{"data":[]}`, "", false},
		{".data[0].id", `{"data":[]}`, "", false},
		{".existing_id", `{"existing_id":12345678901234567890}`, "12345678901234567890", false},
		{".total > 0", `{"total":0}`, "", false},
		{".x", `not json`, "", true},
		{".x", `{"x":{"a":1}}`, "", true},
	} {
		var c jqCache
		code, err := c.get(tc.expr)
		require.NoError(t, err)
		id, err := findID(context.Background(), code, []byte(tc.body))
		if tc.err {
			require.ErrorIs(t, err, ErrNoIDInResponse, tc.body)
			continue
		}
		require.NoError(t, err, tc.body)
		require.Equal(t, tc.want, id, tc.body)
	}
}

// FuzzFindID: a CRM answer never panics the lookup and gives an id, none,
// or ErrNoIDInResponse.
func FuzzFindID(f *testing.F) {
	f.Add(`{"data":[{"id":"x"}]}`)
	f.Add(`{"data":[{"id":1e400}]}`)
	f.Add(`[1,2`)
	var c jqCache
	code, err := c.get(".data[0].id // empty")
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, body string) {
		id, err := findID(context.Background(), code, []byte(body))
		if err != nil {
			require.ErrorIs(t, err, ErrNoIDInResponse)
			require.Empty(t, id)
		}
		require.LessOrEqual(t, len(id), 4096)
	})
}
