package app

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/topology"
)

func TestReplayCommand(t *testing.T) {
	js, names := cliServer(t, 2)
	ctx := context.Background()

	// 5 events each of keys a/b (a with a subject-escaped key), interleaved.
	keyA := "a.1"
	var stamps []time.Time // stored time of each event of keyA
	for i := range 5 {
		for _, key := range []string{keyA, "b"} {
			id := fmt.Sprintf("%s-%d", key, i)
			m := nats.NewMsg(names.EventSubject("order", key))
			m.Header.Set(nats.MsgIdHdr, id)
			m.Data = []byte(fmt.Sprintf(`{"id":%q,"type":"order","key":%q}`, id, key))
			ack, err := js.PublishMsg(ctx, m)
			require.NoError(t, err)
			if key == keyA {
				raw, err := js.Stream(ctx, names.EventsStream())
				require.NoError(t, err)
				sm, err := raw.GetMsg(ctx, ack.Sequence)
				require.NoError(t, err)
				stamps = append(stamps, sm.Time)
			}
		}
		time.Sleep(5 * time.Millisecond) // distinct stored times
	}
	countEvents := func() uint64 {
		st, err := js.Stream(ctx, names.EventsStream())
		require.NoError(t, err)
		return st.CachedInfo().State.Msgs
	}
	require.EqualValues(t, 10, countEvents())

	_, err := parkedCLI(t, "replay", "--since", "1h")
	require.ErrorContains(t, err, "--reason is required")
	_, err = parkedCLI(t, "replay", "--since", "yesterday", "--reason", "x")
	require.ErrorContains(t, err, "--since")
	require.EqualValues(t, 10, countEvents(), "a refused replay stores nothing")

	since, until := stamps[1].Format(time.RFC3339Nano), stamps[3].Format(time.RFC3339Nano)
	out, err := parkedCLI(t, "replay", "--since", since, "--until", until, "--key", keyA, "--type", "order",
		"--reason", "crm lost a day", "--by", "tester", "--dry-run")
	require.NoError(t, err, out)
	require.Contains(t, out, "dry run: would replay 3 event(s)")
	require.EqualValues(t, 10, countEvents(), "a dry run stores nothing")

	out, err = parkedCLI(t, "replay", "--since", since, "--until", until, "--key", keyA,
		"--reason", "crm lost a day", "--by", "tester", "--progress", "1")
	require.NoError(t, err, out)
	require.Contains(t, out, "replayed 3 event(s)")
	require.Equal(t, 3, strings.Count(out, "... "), out)
	require.EqualValues(t, 13, countEvents())

	// The copies: same envelope, new msg ids, in order, on the key's subject.
	st, err := js.Stream(ctx, names.EventsStream())
	require.NoError(t, err)
	var ids, bodies []string
	for seq := uint64(11); seq <= 13; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		_, typ, tok, err := names.SubjectParts(m.Subject)
		require.NoError(t, err)
		require.Equal(t, "order", typ)
		require.Equal(t, topology.KeyToken(keyA), tok)
		ids = append(ids, m.Header.Get(nats.MsgIdHdr))
		bodies = append(bodies, string(m.Data))
	}
	for i, id := range ids {
		orig := fmt.Sprintf("%s-%d", keyA, i+1)
		require.True(t, strings.HasPrefix(id, orig+":replay:"), id)
		require.Equal(t, fmt.Sprintf(`{"id":%q,"type":"order","key":%q}`, orig, keyA), bodies[i])
	}

	// Audited: the dry run and the replay.
	as, err := js.Stream(ctx, names.AuditStream())
	require.NoError(t, err)
	last, err := as.GetLastMsgForSubject(ctx, names.AuditSubject("replay"))
	require.NoError(t, err)
	var rec ReplayRecord
	require.NoError(t, json.Unmarshal(last.Data, &rec))
	require.Equal(t, "tester", rec.By)
	require.Equal(t, "crm lost a day", rec.Reason)
	require.Equal(t, keyA, rec.Key)
	require.Equal(t, 3, rec.Count)
	require.False(t, rec.DryRun)
	require.NotNil(t, rec.Until)

	// Every type and key from the start, up to the end at start time: the
	// 13 stored events once each, not the copies made meanwhile.
	res, err := Replay(ctx, js, names, ReplayOptions{Since: stamps[0].Add(-time.Hour), Reason: "all", By: "t"})
	require.NoError(t, err)
	require.Equal(t, 13, res.Count)
	require.True(t, res.Audited)
	require.EqualValues(t, 26, countEvents())
	cons, err := js.OrderedConsumer(ctx, names.EventsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{replayFilter(names, "", "b")}})
	require.NoError(t, err)
	var bOrder []string
	for range 10 { // 5 originals, 5 copies
		m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
		require.NoError(t, err)
		var env struct{ ID string }
		require.NoError(t, json.Unmarshal(m.Data(), &env))
		bOrder = append(bOrder, env.ID)
	}
	require.Equal(t, []string{"b-0", "b-1", "b-2", "b-3", "b-4", "b-0", "b-1", "b-2", "b-3", "b-4"}, bOrder)
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "2026-01-02T10:00:00Z", want: time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)},
		{in: "90m", want: now.Add(-90 * time.Minute)},
		{in: "-5m", bad: true},
		{in: "yesterday", bad: true},
	} {
		got, err := parseWhen(tc.in, now)
		if tc.bad {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.True(t, tc.want.Equal(got), tc.in)
	}
}

// --latest-per-key re-sends each key's newest event per type only, in
// stream order.
func TestReplayLatestPerKey(t *testing.T) {
	js, names := cliServer(t, 2)
	ctx := context.Background()
	pub := func(typ, key, id string) {
		m := nats.NewMsg(names.EventSubject(typ, key))
		m.Header.Set(nats.MsgIdHdr, id)
		m.Data = []byte(fmt.Sprintf(`{"id":%q,"type":%q,"key":%q}`, id, typ, key))
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	for i := range 4 {
		pub("contact", "k1", fmt.Sprintf("k1-%d", i))
		pub("contact", "k2", fmt.Sprintf("k2-%d", i))
	}
	pub("lead", "k1", "k1-lead") // another type of the same key: its own newest state
	out, err := parkedCLI(t, "replay", "--since", "1h", "--latest-per-key", "--reason", "resync", "--by", "tester")
	require.NoError(t, err, out)
	require.Contains(t, out, "replayed 3 event(s)")
	require.Contains(t, out, "6 older event(s) of the same keys skipped")
	st, err := js.Stream(ctx, names.EventsStream())
	require.NoError(t, err)
	var ids []string
	for seq := uint64(10); seq <= 12; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		var env struct{ ID string }
		require.NoError(t, json.Unmarshal(m.Data, &env))
		ids = append(ids, env.ID)
	}
	require.Equal(t, []string{"k1-3", "k2-3", "k1-lead"}, ids)
}
