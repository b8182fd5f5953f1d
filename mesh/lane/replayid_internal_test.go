package lane

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/topology"
)

// A message parked, replayed, parked again and replayed again (a held key
// that fails round after round) keeps one replay suffix in its message id:
// the id names the original event and the latest round, and does not grow.
func TestReplayIDDoesNotGrow(t *testing.T) {
	names := topology.New(topology.Config{})
	p := &Parked{names: names}
	stage := topology.StageDispatcher
	id := "customer:757#18"
	for round := range 5 {
		pm := &jetstream.RawStreamMsg{
			Subject:  names.ParkedSubject(stage, "customer", "757"),
			Sequence: uint64(100 + round),
			Header:   nats.Header{},
		}
		pm.Header.Set(nats.MsgIdHdr, "park:"+string(stage)+":"+id)
		out, err := p.replayMsg(stage, pm, "r"+string(rune('a'+round)), round == 4)
		require.NoError(t, err)
		id = out.Header.Get(nats.MsgIdHdr)
		require.True(t, strings.HasPrefix(id, "customer:757#18:replay:"), id)
		require.Equal(t, 1, strings.Count(id, ":replay:"), "round %d: %s", round, id)
	}
}
