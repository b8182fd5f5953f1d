package crmsim_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
)

// deliver sends one request per step. A step is "<id>" (answered 2xx) or
// "<id>!" (answered 422). The key header is the part before '#'; a step
// "<key>=<id>" names the key explicitly.
func deliver(t *testing.T, s *crmsim.Sim, steps ...string) {
	t.Helper()
	for _, st := range steps {
		id, fail := strings.CutSuffix(st, "!")
		key, id2, explicit := strings.Cut(id, "=")
		if explicit {
			id = id2
		} else {
			key, _, _ = strings.Cut(id, "#")
		}
		if fail {
			s.Reject(id, 422)
		}
		w := do(t, s.Handler(), req{method: "POST", path: "/api/events",
			hdr: map[string]string{"X-Sluice-Event-Id": id, "Idempotency-Key": id, "X-Sluice-Key": key}})
		if fail {
			require.Equal(t, 422, w.Code)
			s.Reject(id, 0)
		} else {
			require.Less(t, w.Code, 300)
		}
	}
}

var expectedAB = map[string][]string{
	"a": {"a#1", "a#2", "a#3", "a#4"},
	"b": {"b#1", "b#2"},
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name  string
		steps []string
		ok    bool
		check func(t *testing.T, r crmsim.Report)
	}{
		{"all in order, keys interleaved", []string{"a#1", "b#1", "a#2", "a#3", "b#2", "a#4"}, true,
			func(t *testing.T, r crmsim.Report) {
				require.Empty(t, r.Keys)
				require.Equal(t, crmsim.Totals{Keys: 2, Expected: 6, Delivered: 6, Attempts: 6}, r.Totals)
			}},
		{"failures then success in order", []string{"a#1", "a#2!", "a#2!", "a#2", "a#3", "a#4", "b#1!", "b#1", "b#2"}, true,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, 6, r.Totals.Delivered)
				require.Equal(t, 9, r.Totals.Attempts)
			}},
		{"missing in the middle and at the end", []string{"a#1", "a#3", "b#1"}, false,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, []crmsim.KeyReport{
					{Key: "a", Missing: []string{"a#2", "a#4"}},
					{Key: "b", Missing: []string{"b#2"}},
				}, r.Keys)
				require.Equal(t, 3, r.Totals.Missing)
				require.Zero(t, r.Totals.ReorderedKeys)
			}},
		{"failed attempts do not count as delivered", []string{"a#1", "a#2!", "a#3", "a#4", "b#1", "b#2"}, false,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, []string{"a#2"}, r.Keys[0].Missing)
			}},
		{"reordered: first violating pair", []string{"a#1", "a#3", "a#2", "a#4", "b#2", "b#1"}, false,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, &crmsim.Reorder{Earlier: "a#2", Later: "a#3"}, r.Keys[0].Reordered)
				require.Equal(t, &crmsim.Reorder{Earlier: "b#1", Later: "b#2"}, r.Keys[1].Reordered)
				require.Equal(t, 2, r.Totals.ReorderedKeys)
				require.Zero(t, r.Totals.Missing)
			}},
		{"reorder against the furthest delivered", []string{"a#1", "a#4", "a#2", "a#3", "b#1", "b#2"}, false,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, &crmsim.Reorder{Earlier: "a#2", Later: "a#4"}, r.Keys[0].Reordered)
			}},
		{"a late duplicate is not a reorder", []string{"a#1", "a#2", "a#1", "a#3", "a#2", "a#2", "a#4", "b#1", "b#2"}, true,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, map[string]int{"a#1": 2, "a#2": 3}, r.Keys[0].Duplicates)
				require.Equal(t, 2, r.Totals.DuplicateIDs)
				require.Equal(t, 3, r.Totals.ExtraDeliveries)
			}},
		{"unexpected ids", []string{"a#1", "a#2", "a#3", "a#4", "b#1", "b#2", "c#1", "a#9", "c#1"}, false,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, []crmsim.KeyReport{
					{Key: "a", Unexpected: []string{"a#9"}},
					{Key: "c", Unexpected: []string{"c#1"}, Duplicates: map[string]int{"c#1": 2}},
				}, r.Keys)
				require.Equal(t, 2, r.Totals.Unexpected)
			}},
		{"an expected id delivered under another key header is still matched by id",
			[]string{"a#1", "a#2", "z=a#3", "a#4", "b#1", "b#2"}, true, nil},
		{"nothing delivered", nil, false,
			func(t *testing.T, r crmsim.Report) { require.Equal(t, 6, r.Totals.Missing) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, crmsim.Config{})
			deliver(t, s, tc.steps...)
			r := s.Check(expectedAB)
			require.Equal(t, tc.ok, r.OK(), r.String())
			if tc.check != nil {
				tc.check(t, r)
			}
			b, err := json.Marshal(r)
			require.NoError(t, err)
			var back struct {
				OK bool `json:"ok"`
				crmsim.Report
			}
			require.NoError(t, json.Unmarshal(b, &back))
			require.Equal(t, tc.ok, back.OK)
		})
	}
}

func TestCheckIgnoresRepeatedExpectedIDs(t *testing.T) {
	s := newSim(t, crmsim.Config{})
	deliver(t, s, "a#1", "a#2")
	r := s.Check(map[string][]string{"a": {"a#1", "a#2", "a#1"}})
	require.True(t, r.OK(), r.String())
	require.Equal(t, 2, r.Totals.Expected)
}

func TestSelfCheck(t *testing.T) {
	cases := []struct {
		name  string
		steps []string
		ok    bool
		check func(t *testing.T, r crmsim.Report)
	}{
		{"in order from the smallest seen", []string{"a#5", "b#1", "a#6", "a#7", "b#2"}, true,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, 5, r.Totals.Expected)
				require.Equal(t, 2, r.Totals.Keys)
			}},
		{"gap", []string{"a#1", "a#2", "a#5", "b#1"}, false,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, []crmsim.KeyReport{{Key: "a", Missing: []string{"a#3", "a#4"}}}, r.Keys)
			}},
		{"failed attempt leaves a gap", []string{"a#1", "a#2!", "a#3"}, false,
			func(t *testing.T, r crmsim.Report) { require.Equal(t, []string{"a#2"}, r.Keys[0].Missing) }},
		{"reordered", []string{"a#1", "a#3", "a#2"}, false,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, &crmsim.Reorder{Earlier: "a#2", Later: "a#3"}, r.Keys[0].Reordered)
				require.Empty(t, r.Keys[0].Missing)
			}},
		{"duplicates allowed", []string{"a#1", "a#2", "a#2", "a#3"}, true,
			func(t *testing.T, r crmsim.Report) {
				require.Equal(t, map[string]int{"a#2": 2}, r.Keys[0].Duplicates)
			}},
		{"ids without a number are unchecked", []string{"a#1", "x", "y#z", "a#2"}, true,
			func(t *testing.T, r crmsim.Report) { require.Equal(t, 2, r.Totals.Unchecked) }},
		{"key header groups, not the id prefix", []string{"k=p#1", "k=q#2", "k=p#3"}, true, nil},
		{"a huge number lists a bounded gap", []string{"a#1", "a#99999999"}, false,
			func(t *testing.T, r crmsim.Report) {
				require.Len(t, r.Keys[0].Missing, 10000)
				require.Equal(t, 99999997, r.Totals.Missing)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, crmsim.Config{})
			deliver(t, s, tc.steps...)
			r := s.SelfCheck()
			require.Equal(t, tc.ok, r.OK(), r.String())
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestReportString(t *testing.T) {
	s := newSim(t, crmsim.Config{})
	deliver(t, s, "a#1", "a#3", "a#2", "b#2")
	out := s.Check(expectedAB).String()
	for _, want := range []string{"ok=false", "a#3 delivered before a#2", "missing [a#4]", "missing [b#1]"} {
		require.Contains(t, out, want)
	}
}
