package dispatcher

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProbeAnswersAreTakenOnceForTheSameRequest(t *testing.T) {
	res := response{Status: 201, Body: []byte(`{"id":"d-1"}`)}
	tests := []struct {
		name         string
		method, path string
		age          time.Duration
		want         bool
	}{
		{"same request", "POST", "/deals", 0, true},
		{"another path (an update's id changed)", "PATCH", "/deals/d-1", 0, false},
		{"another method", "PUT", "/deals", 0, false},
		{"older than the TTL", "POST", "/deals", probeAnswerTTL + time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p probeAnswers
			require.False(t, p.has("e1"))
			p.put("e1", "POST", "/deals", res)
			a := p.m["e1"]
			a.at = a.at.Add(-tc.age)
			p.m["e1"] = a
			require.Equal(t, tc.age == 0, p.has("e1"))
			got, ok := p.take("e1", tc.method, tc.path)
			require.Equal(t, tc.want, ok)
			if ok {
				require.Equal(t, res, got)
			}
			_, again := p.take("e1", "POST", "/deals")
			require.False(t, again, "an answer is used once")
		})
	}
}

func TestProbeAnswersStayBounded(t *testing.T) {
	var p probeAnswers
	for i := range maxProbeAnswers + 10 {
		p.put(string(rune('a'+i%26))+time.Duration(i).String(), "POST", "/x", response{Status: 200})
	}
	require.Len(t, p.m, maxProbeAnswers)
	for id, a := range p.m { // all old: the next put makes room
		a.at = a.at.Add(-2 * probeAnswerTTL)
		p.m[id] = a
	}
	p.put("new", "POST", "/x", response{Status: 200})
	require.True(t, p.has("new"))
	require.Len(t, p.m, 1)
}
