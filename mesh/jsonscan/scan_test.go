package jsonscan_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/jsonscan"
)

func TestValue(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{`{"a":[1,{"b":"}]"}],"c":null} ,"next"`, `{"a":[1,{"b":"}]"}],"c":null}`, true},
		{`"x\"y",1`, `"x\"y"`, true},
		{`12.5e3}`, `12.5e3`, true},
		{`true `, `true`, true},
		{`[1,2`, `[1,2`, false}, // unclosed
		{`"open`, ``, false},
		{`,`, ``, false}, // empty
	} {
		p := jsonscan.Scanner{B: []byte(c.in)}
		got, ok := p.Value()
		require.Equal(t, c.ok, ok, c.in)
		if ok {
			require.Equal(t, c.want, string(got), c.in)
		}
	}
}

// Str answers only where encoding/json gives the bytes unchanged.
func TestStr(t *testing.T) {
	for _, in := range []string{`"plain"`, `"ü ok"`, `"esc\n"`, `"ctl` + "\x01" + `"`, `"bad ` + "\xff" + `"`, `"open`, `x`} {
		p := jsonscan.Scanner{B: []byte(in)}
		got, ok := p.Str()
		var want string
		err := json.Unmarshal([]byte(in), &want)
		if ok {
			require.NoError(t, err, in)
			require.Equal(t, want, got, in)
			require.True(t, p.Done(), in)
		}
		if in == `"plain"` || in == `"ü ok"` {
			require.True(t, ok, in)
		}
	}
}

func FuzzStr(f *testing.F) {
	f.Add([]byte(`"plain"`))
	f.Add([]byte(`"a\"b"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := jsonscan.Scanner{B: b}
		got, ok := p.Str()
		if !ok {
			return
		}
		var want string
		require.NoError(t, json.Unmarshal(b[:p.I], &want))
		require.Equal(t, want, got)
	})
}
