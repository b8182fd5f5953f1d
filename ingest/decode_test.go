package ingest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/envelope"
)

func seedCorpus(f *testing.F, pattern string) {
	files, err := filepath.Glob(filepath.Join("testdata", "requests", pattern))
	require.NoError(f, err)
	require.NotEmpty(f, files)
	for _, name := range files {
		b, err := os.ReadFile(name)
		require.NoError(f, err)
		f.Add(b)
	}
}

func TestDecodeBatch(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "requests", "bad_lines.ndjson"))
	require.NoError(t, err)
	items, errs, err := decodeBatch(b, 10)
	require.NoError(t, err)
	require.Len(t, items, 1, "CRLF lines decode")
	require.Equal(t, "c-1", items[0].env.ID)
	require.Len(t, errs, 2)
	require.Equal(t, []int{1, 2}, []int{errs[0].Index, errs[1].Index})
	require.Equal(t, []int{2, 3}, []int{errs[0].Line, errs[1].Line})
	require.Contains(t, errs[1].Reason, "trailing data")

	_, _, err = decodeBatch(b, 2)
	require.ErrorIs(t, err, ErrTooLarge)

	_, errs, err = decodeBatch([]byte(strings.Repeat("x\n", 500)), 1000)
	require.NoError(t, err)
	require.Len(t, errs, maxReportedErrors)
}

func TestWaves(t *testing.T) {
	keys := []string{"a", "b", "a", "c", "a", "b"}
	items := make([]item, len(keys))
	for i, k := range keys {
		items[i] = item{index: i, env: &envelope.Envelope{Key: k}}
	}
	require.Equal(t, [][]int{{0, 1, 3}, {2, 5}, {4}}, waves(items))
	require.Empty(t, waves(nil))
}

// checkBatch asserts the invariants of decodeBatch on any input.
func checkBatch(t *testing.T, body []byte, maxEvents int) {
	items, errs, err := decodeBatch(body, maxEvents)
	if err != nil {
		require.ErrorIs(t, err, ErrTooLarge)
		require.Nil(t, items)
		return
	}
	lines := 0
	for _, l := range bytes.Split(body, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			lines++
		}
	}
	require.LessOrEqual(t, lines, maxEvents)
	failed := map[int]bool{}
	for _, e := range errs {
		require.NotEmpty(t, e.Reason)
		failed[e.Index] = true
	}
	if lines == 0 {
		require.Empty(t, items)
		require.Len(t, errs, 1)
		return
	}
	if len(errs) < maxReportedErrors {
		require.Equal(t, lines, len(items)+len(failed), "every non-blank line is an event or an error")
	}
	last := -1
	for _, it := range items {
		require.False(t, failed[it.index])
		require.Greater(t, it.index, last)
		last = it.index
		roundTrip(t, it.env)
	}
}

// roundTrip: what ingest stores (Marshal) decodes back to the same envelope.
func roundTrip(t *testing.T, e *envelope.Envelope) {
	require.NotNil(t, e)
	b, err := e.Marshal()
	require.NoError(t, err)
	back, err := envelope.Decode(b)
	require.NoError(t, err, string(b))
	require.Equal(t, e.ID, back.ID)
	require.Equal(t, e.Type, back.Type)
	require.Equal(t, e.Key, back.Key)
	require.True(t, e.OccurredAt.Equal(back.OccurredAt))
}

func FuzzDecodeBatch(f *testing.F) {
	seedCorpus(f, "*.ndjson")
	seedCorpus(f, "*.json")
	f.Add([]byte("\n\n"))
	f.Add([]byte("{}\n{}\r\n{"))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkBatch(t, body, 50)
	})
}

func FuzzDecodeSingle(f *testing.F) {
	seedCorpus(f, "*.json")
	f.Add([]byte(`{"id":"x","data":null}`))
	f.Add([]byte(`{"occurred_at":"yesterday"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		it, errs := decodeSingle(body)
		if len(errs) > 0 {
			require.Nil(t, it.env)
			for _, e := range errs {
				require.NotEmpty(t, e.Reason)
			}
			return
		}
		roundTrip(t, it.env)
	})
}
