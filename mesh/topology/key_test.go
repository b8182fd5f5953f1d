package topology_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

func TestKeyToken(t *testing.T) {
	for _, tc := range []struct{ key, token string }{
		{"customer:42", "customer:42"},
		{"a.b", "a~2Eb"},
		{"x y", "x~20y"},
		{"*>", "~2A~3E"},
		{"~", "~7E"},
		{"ünï", "~C3~BCn~C3~AF"},
		{"a@b+c=d-e_f", "a@b+c=d-e_f"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			require.Equal(t, tc.token, topology.KeyToken(tc.key))
			back, err := topology.KeyFromToken(tc.token)
			require.NoError(t, err)
			require.Equal(t, tc.key, back)
		})
	}
}

func TestCheckKey(t *testing.T) {
	for _, good := range []string{"customer:1", "é", "a b", "\u00a0nbsp", "日本"} {
		require.NoError(t, topology.CheckKey(good), "%q", good)
	}
	for _, bad := range []string{"", string(make([]byte, 201)), "a\nb", "\xff", "a\x7fb",
		"a\u0085b", "\u0080", "x\u009f"} { // C1 controls too (issue 11)
		require.ErrorIs(t, topology.CheckKey(bad), topology.ErrBadKey, "%q", bad)
	}
}

func FuzzKeyToken(f *testing.F) {
	for _, s := range []string{"customer:1", "a.b.c", "~~", "é", "*", ">", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		tok := topology.KeyToken(key)
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if c <= ' ' || c == '.' || c == '*' || c == '>' || c > 126 {
				t.Fatalf("token %q of %q has byte %q", tok, key, c)
			}
		}
		back, err := topology.KeyFromToken(tok)
		if err != nil || back != key {
			t.Fatalf("round trip %q -> %q -> %q (%v)", key, tok, back, err)
		}
		if _, err := topology.KeyFromToken(key); err != nil && !contains(key, '~') {
			t.Fatalf("decode of a plain token failed: %v", err)
		}
	})
}

func contains(s string, b byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return true
		}
	}
	return false
}

// The client-side partition function must agree with the server's
// {{partition}} transform, or tools that compute a key's lane lie.
func TestPartitionOfMatchesServerTransform(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(16))
	ctx := context.Background()
	require.NoError(t, names.Ensure(ctx, js))
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("customer:%d", i)
		if i%7 == 0 {
			key = fmt.Sprintf("odd.key %d", i)
		}
		m := nats.NewMsg(names.EventSubject("t", key))
		m.Data = []byte("x")
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
		st, err := js.Stream(ctx, names.EventsStream())
		require.NoError(t, err)
		raw, err := st.GetLastMsgForSubject(ctx, names.Config().Prefix+".events.*.t."+topology.KeyToken(key))
		require.NoError(t, err)
		p, typ, tok, err := names.SubjectParts(raw.Subject)
		require.NoError(t, err)
		require.Equal(t, "t", typ)
		require.Equal(t, topology.KeyToken(key), tok)
		require.Equal(t, names.PartitionOf(key), p, "key %q", key)
	}
}

func TestEnsureIsIdempotentAndRefusesPartitionChange(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	cfg := meshtest.Topology(4)
	ctx := context.Background()
	require.NoError(t, topology.New(cfg).Ensure(ctx, js))
	require.NoError(t, topology.New(cfg).Ensure(ctx, js))
	cfg.Partitions = 8
	err := topology.New(cfg).Ensure(ctx, js)
	require.ErrorIs(t, err, topology.ErrPartitionsChanged)
	require.Contains(t, err.Error(), "topology.partitions")
}

func TestConfigValidate(t *testing.T) {
	good := topology.Config{}.WithDefaults()
	require.NoError(t, good.Validate())
	for _, tc := range []struct {
		name string
		mut  func(*topology.Config)
		key  string
	}{
		{"partitions", func(c *topology.Config) { c.Partitions = 0 }, "topology.partitions"},
		{"prefix", func(c *topology.Config) { c.Prefix = "a.b" }, "topology.prefix"},
		{"replicas", func(c *topology.Config) { c.Replicas = 2 }, "topology.replicas"},
		{"ack_wait", func(c *topology.Config) { c.AckWait = 1 }, "topology.ack_wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mut(&c)
			require.ErrorContains(t, c.Validate(), tc.key)
		})
	}
}

func TestSubjectPartsReadsHistoryOfAnEarlierCount(t *testing.T) {
	names := topology.New(topology.Config{Partitions: 4})
	p, typ, tok, err := names.SubjectParts("sluice.events.7.order.customer:1")
	require.NoError(t, err, "stored before the count was lowered from 8 to 4")
	require.Equal(t, 7, p)
	require.Equal(t, "order", typ)
	require.Equal(t, "customer:1", tok)
	for _, bad := range []string{"sluice.events.-1.order.k", "sluice.events.x.order.k", "other.events.1.order.k", "sluice.events.1.order"} {
		_, _, _, err := names.SubjectParts(bad)
		require.ErrorIs(t, err, topology.ErrBadSubject, bad)
	}
}
