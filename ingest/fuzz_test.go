package ingest

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/mesh/catalog"
)

// FuzzValidateRequest runs ingest's whole untrusted-input path short of
// JetStream (size limit, envelope/NDJSON decoding, catalog checks, key
// derivation, schema validation) over any body, batch or single. Every
// answer is 200, 400, 403 (a source other than the producer's) or 413; a 200 names every event with its key, a 400
// names a reason for each problem.
func FuzzValidateRequest(f *testing.F) {
	seedCorpus(f, "*.ndjson")
	seedCorpus(f, "*.json")
	f.Add([]byte(`{"id":"s-1","type":"signup","occurred_at":"2025-01-01T00:00:00Z","data":{"user_id":7,"email":"not-an-email"}}`))
	f.Add([]byte(`{"id":"s-1","type":"signup","occurred_at":"2025-01-01T00:00:00Z","data":{"user_id":"x","email":"a@b"}}`))
	f.Add([]byte(`{"id":"n","type":"note","key":"k\u0085","occurred_at":"2025-01-01T00:00:00Z","data":{"text":"t"}}`))
	b, err := os.ReadFile(filepath.Join("testdata", "catalog.yaml"))
	require.NoError(f, err)
	var cc catalog.Config
	require.NoError(f, yaml.Unmarshal(b, &cc))
	cat, err := catalog.Compile(cc, os.DirFS(filepath.Join("testdata", "schemas")))
	require.NoError(f, err)
	cfg := DefaultConfig()
	cfg.MaxBatch = 50
	s := &Service{cfg: cfg, deps: Deps{Catalog: cat}}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, batch := range []bool{false, true} {
			status, resp := s.process(context.Background(), request{body: body, batch: batch, source: "fuzz"})
			switch status {
			case http.StatusOK:
				require.Empty(t, resp.Errors)
				require.NotEmpty(t, resp.Results)
				for i, r := range resp.Results {
					require.Equal(t, i, r.Index)
					require.NotEmpty(t, r.ID)
					require.NotEmpty(t, r.Key)
				}
			case http.StatusBadRequest:
				require.Equal(t, ErrInvalidEvents.Error(), resp.Error)
				require.NotEmpty(t, resp.Errors)
				require.LessOrEqual(t, len(resp.Errors), maxReportedErrors)
				for _, e := range resp.Errors {
					require.NotEmpty(t, e.Reason)
				}
			case http.StatusForbidden: // a source other than the producer's
				require.Equal(t, ErrSourceForbidden.Error(), resp.Error)
				require.NotEmpty(t, resp.Errors)
				for _, e := range resp.Errors {
					require.Equal(t, "source", e.Field)
				}
			case http.StatusRequestEntityTooLarge:
				require.True(t, batch)
			default:
				t.Fatalf("status %d for %q", status, body)
			}
		}
	})
}
