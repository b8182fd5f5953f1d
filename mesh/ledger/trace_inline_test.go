package ledger

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// A delivery by the inline outlet (the dispatcher in the enricher's lane)
// is traced to the events stream, where its Seq points, and no step says a
// dispatch stream stored a request; a two-hop delivery keeps both.
func TestTraceStepsOfAnInlineDelivery(t *testing.T) {
	names := topology.New(meshtest.Topology(4))
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	delivered := func(inline bool, seq uint64) Stored {
		r := Record{Step: StepDelivered, EventID: "e-1", Stage: topology.StageDispatcher, At: at.Add(time.Second),
			Seq: seq, AcceptedAt: at, Inline: inline, CRM: &CRMCall{Status: 200}}
		if !inline {
			r.EnrichedAt = at.Add(time.Millisecond)
		}
		return Stored{Record: r, LedgerSeq: 2}
	}
	ev := Event{ID: "e-1", Type: "t", KeyToken: "k", Seq: 7, At: at}
	for _, c := range []struct {
		name    string
		rec     Stored
		streams []string // of the steps, in order
		detail  string   // in the delivered step
	}{
		{"inline", delivered(true, 7), []string{names.EventsStream(), names.EventsStream()}, "of the event (inline: sent from the enricher's lane)"},
		{"two hops", delivered(false, 3), []string{names.EventsStream(), names.DispatchStream(), names.DispatchStream()}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var tr Trace
			tr.steps(names, Inputs{Events: []Event{ev}, Records: []Stored{c.rec}}, nil)
			var streams []string
			for _, s := range tr.Steps {
				streams = append(streams, s.Stream)
			}
			require.Equal(t, c.streams, streams, "%+v", tr.Steps)
			last := tr.Steps[len(tr.Steps)-1]
			require.Equal(t, "delivered", last.Step)
			require.Equal(t, c.rec.Seq, last.Seq)
			if c.detail != "" {
				require.Contains(t, last.Detail, c.detail)
			} else {
				require.NotContains(t, last.Detail, "inline")
			}
		})
	}
}
