package topology

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/retry"
)

// ensureAttempt bounds one create/update request; a cluster electing a meta
// or stream leader does not answer until it has one.
const ensureAttempt = 5 * time.Second

// ensureRetry is the wait between Ensure attempts on a transient error.
var ensureRetry = retry.Policy{Delay: 100 * time.Millisecond, Max: 2 * time.Second}

// EnsureStream creates the stream, or updates it when it differs from cfg
// in a field cfg sets. Every service calls Ensure at start: on a cluster,
// six services updating the same R3 streams at once queued behind each
// other past their deadline, so an unchanged stream is left alone.
//
// While intake is closed for a partition change (MetaIntake set by
// `sluice partitions drain`), the stream keeps its closed subjects and the
// change's metadata: a service starting mid-procedure must not reopen
// intake.
//
// Timeouts and missing responders (no leader yet) are retried until ctx
// ends; anything else is returned.
func (n Names) EnsureStream(ctx context.Context, js StreamManager, cfg jetstream.StreamConfig) error {
	return retryTransient(ctx, func() error { return n.ensureStreamOnce(ctx, js, cfg) })
}

// ensureKV creates the bucket, or updates it when its backing stream
// differs in a setting cfg makes (description, history, TTL, replicas,
// storage, max bytes); an unchanged bucket is left alone, as streams are.
func (n Names) ensureKV(ctx context.Context, js StreamManager, cfg jetstream.KeyValueConfig) error {
	return retryTransient(ctx, func() error {
		actx, cancel := context.WithTimeout(ctx, ensureAttempt)
		defer cancel()
		if s, err := js.Stream(actx, "KV_"+cfg.Bucket); err == nil && sameKVConfig(s.CachedInfo().Config, cfg) {
			return nil
		} else if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		_, err := js.CreateOrUpdateKeyValue(actx, cfg)
		return err
	})
}

func sameKVConfig(cur jetstream.StreamConfig, want jetstream.KeyValueConfig) bool {
	history := int64(max(want.History, 1))
	replicas := max(want.Replicas, 1)
	return cur.Description == want.Description && cur.MaxMsgsPerSubject == history && cur.MaxAge == want.TTL &&
		cur.Replicas == replicas && cur.Storage == want.Storage && (want.MaxBytes == 0 || cur.MaxBytes == want.MaxBytes)
}

// retryTransient runs f until it succeeds, fails for good, or ctx ends.
func retryTransient(ctx context.Context, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(ensureRetry.Backoff(attempt)):
		}
	}
}

func (n Names) ensureStreamOnce(ctx context.Context, js StreamManager, cfg jetstream.StreamConfig) error {
	actx, cancel := context.WithTimeout(ctx, ensureAttempt)
	defer cancel()
	s, err := js.Stream(actx, cfg.Name)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	if err == nil {
		cur := s.CachedInfo().Config
		if cur.Metadata[MetaIntake] != "" {
			cfg.Subjects = cur.Subjects
			cfg.Metadata = withMeta(cfg.Metadata, MetaIntake, cur.Metadata[MetaIntake])
			if sw := cur.Metadata[MetaSwitch]; sw != "" {
				cfg.Metadata = withMeta(cfg.Metadata, MetaSwitch, sw)
			}
		}
		if sameStreamConfig(cur, cfg) {
			return nil
		}
	}
	_, err = js.CreateOrUpdateStream(actx, cfg)
	return err
}

// transient reports errors worth another attempt: no answer (yet).
func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// sameStreamConfig reports whether cur already has every field want sets
// (a zero field in want means "the server's default" and is not compared)
// and every metadata key want sets.
func sameStreamConfig(cur, want jetstream.StreamConfig) bool {
	cm, wm := fields(cur), fields(want)
	if cm == nil || wm == nil {
		return false
	}
	for k, w := range wm {
		if k == "metadata" || isZeroJSON(w) {
			continue
		}
		if !bytes.Equal(w, cm[k]) {
			return false
		}
	}
	for k, v := range want.Metadata {
		if cur.Metadata[k] != v {
			return false
		}
	}
	return true
}

func fields(cfg jetstream.StreamConfig) map[string]json.RawMessage {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func isZeroJSON(v json.RawMessage) bool {
	switch string(v) {
	case "0", `""`, "false", "null", "[]", "{}":
		return true
	}
	return false
}
