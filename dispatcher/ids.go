package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/leaderkv"
)

// maxCachedJQ bounds the compiled id_from cache; expressions come from the
// catalog, so a handful is normal.
const (
	maxCachedJQ = 256
	maxIDLen    = 1024
	// idFromTimeout bounds one run of an id_from expression.
	idFromTimeout = time.Second
)

// jqCache compiles each distinct id_from expression once.
type jqCache struct {
	mu   sync.Mutex
	code map[string]*catalog.JQ
}

func (c *jqCache) get(expr string) (*catalog.JQ, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if code, ok := c.code[expr]; ok {
		return code, nil
	}
	code, err := catalog.CompileJQ(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: id_from %q: %w", ErrUndecodable, expr, err)
	}
	if c.code == nil {
		c.code = map[string]*catalog.JQ{}
	}
	if len(c.code) < maxCachedJQ {
		c.code[expr] = code
	}
	return code, nil
}

// extractID runs code over a create response body and returns the CRM id:
// the first result, a non-empty string or a number.
func extractID(ctx context.Context, code *catalog.JQ, body []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("%w: body is not JSON", ErrNoIDInResponse)
	}
	res, ok := code.First(ctx, v, idFromTimeout)
	if !ok {
		return "", fmt.Errorf("%w: id_from gave no result", ErrNoIDInResponse)
	}
	var id string
	switch x := res.(type) {
	case error:
		return "", fmt.Errorf("%w: id_from: %w", ErrNoIDInResponse, x)
	case string:
		id = x
	case json.Number:
		id = x.String()
	case int:
		id = strconv.Itoa(x)
	case *big.Int:
		id = x.String()
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("%w: id_from gave %v", ErrNoIDInResponse, x)
		}
		id = strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return "", fmt.Errorf("%w: id_from gave a %T, want a string or number", ErrNoIDInResponse, res)
	}
	if id == "" || len(id) > maxIDLen {
		return "", fmt.Errorf("%w: id_from gave an empty or over-long id", ErrNoIDInResponse)
	}
	return id, nil
}

// kv is the part of jetstream.KeyValue the id store uses.
type kv interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}

// bucketOpener is the part of jetstream.JetStream that opens a KV bucket.
type bucketOpener interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
	Conn() *nats.Conn
	Options() jetstream.JetStreamOptions
}

// idStore maps <object>.<base64url(id key)> to CRM ids in the KV bucket.
// It opens the bucket on first use, so a Handler works before Start.
type idStore struct {
	js     bucketOpener
	bucket string

	mu    sync.Mutex
	kv    kv
	watch jetstream.KeyValue // kv's bucket, for the cache's watch
	cache idCache            // on between startCache and stopCache (Start and Stop)
	reads atomic.Uint64      // lookups that read the bucket (not the cache)
	// pending holds ids of creates the CRM accepted but whose Put failed,
	// by event id, so the retry stores the id without creating again.
	pending map[string]string
}

func (s *idStore) open(ctx context.Context) (kv, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	b, err := s.js.KeyValue(ctx, s.bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("%w: %s (run topology Ensure): %w", ErrBucketMissing, s.bucket, err)
		}
		return nil, fmt.Errorf("%w: open %s: %w", ErrIDStore, s.bucket, err)
	}
	s.kv = leaderkv.New(b, s.js.Conn(), s.js.Options().APIPrefix)
	s.watch = b
	return s.kv, nil
}

// startCache opens the bucket (its error ends Start, as before the cache)
// and turns the id cache on (idcache.go). A watch that cannot be created
// is logged and the dispatcher reads the bucket for every update, as
// without a cache.
func (s *idStore) startCache(ctx context.Context, log zerolog.Logger) error {
	if _, err := s.open(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	b := s.watch
	s.mu.Unlock()
	if b == nil { // a test's own kv
		return nil
	}
	if err := s.cache.start(b, s.reconnects()); err != nil {
		log.Warn().Err(err).Str("bucket", b.Bucket()).Msg("crm id cache off: cannot watch the bucket; reading it for every update")
	}
	return nil
}

// stopCache ends the cache's watch and empties it.
func (s *idStore) stopCache() { s.cache.stop() }

// reconnects is the connection's reconnect count (the cache is dropped
// after a reconnect).
func (s *idStore) reconnects() uint64 {
	if s.js == nil || s.js.Conn() == nil {
		return 0
	}
	return s.js.Conn().Stats().Reconnects
}

// lookup returns the CRM id of an entity; found is false when none is known.
func (s *idStore) lookup(ctx context.Context, object, idKey string) (id string, found bool, err error) {
	b, err := s.open(ctx)
	if err != nil {
		return "", false, err
	}
	key, rc := kvKey(object, idKey), s.reconnects()
	if id, ok := s.cache.get(key, rc); ok {
		return id, true, nil
	}
	s.reads.Add(1)
	e, err := b.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("%w: get: %w", ErrIDStore, err)
	}
	id = string(e.Value())
	s.cache.put(key, id, e.Revision(), rc)
	return id, true, nil
}

// store remembers id; on failure it keeps it pending under eventID.
func (s *idStore) store(ctx context.Context, eventID, object, idKey, id string) error {
	key, rc := kvKey(object, idKey), s.reconnects()
	b, err := s.open(ctx)
	var rev uint64
	if err == nil {
		rev, err = b.Put(ctx, key, []byte(id))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.pending == nil {
			s.pending = map[string]string{}
		}
		// At most one message per partition is in hand, so this stays small;
		// the bound only guards against a store that never recovers.
		if len(s.pending) < 4096 {
			s.pending[eventID] = id
		}
		if errors.Is(err, ErrBucketMissing) || errors.Is(err, ErrIDStore) {
			return err
		}
		return fmt.Errorf("%w: put: %w", ErrIDStore, err)
	}
	delete(s.pending, eventID)
	s.cache.put(key, id, rev, rc)
	return nil
}

// pendingID returns the id of a create that the CRM accepted but that
// could not be stored yet.
func (s *idStore) pendingID(eventID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.pending[eventID]
	return id, ok
}
