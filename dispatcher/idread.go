package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// leaderKV reads the CRM id bucket from its stream leader.
//
// nats.go reads a KV bucket with direct gets, which any replica of the
// bucket's stream answers; on an R3 cluster a follower can lag behind a Put
// the leader already acknowledged, and the dispatcher then saw no id for a
// record it had just created (an update parked as "no CRM id"). A get
// through the stream's API ($JS.API.STREAM.MSG.GET) is answered by the
// leader and sees every acknowledged Put. Writes go through the bucket as
// usual.
type leaderKV struct {
	jetstream.KeyValue
	nc      *nats.Conn
	subject string // <api prefix>STREAM.MSG.GET.KV_<bucket>
	prefix  string // $KV.<bucket>.
}

func newLeaderKV(b jetstream.KeyValue, nc *nats.Conn, apiPrefix string) leaderKV {
	if apiPrefix == "" {
		apiPrefix = jetstream.DefaultAPIPrefix // jetstream.New leaves the exported field empty
	}
	return leaderKV{
		KeyValue: b,
		nc:       nc,
		subject:  apiPrefix + "STREAM.MSG.GET.KV_" + b.Bucket(),
		prefix:   "$KV." + b.Bucket() + ".",
	}
}

// Get returns the latest value of key, or jetstream.ErrKeyNotFound when the
// key has none or was deleted.
func (l leaderKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{l.prefix + key})
	if err != nil {
		return nil, err
	}
	msg, err := l.nc.RequestWithContext(ctx, l.subject, req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq    uint64    `json:"seq"`
			Header []byte    `json:"hdrs"`
			Data   []byte    `json:"data"`
			Time   time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("get %s: undecodable reply: %w", key, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrKeyNotFound
	case resp.Error != nil:
		return nil, fmt.Errorf("get %s: %w", key, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("get %s: empty reply", key)
	}
	// A delete or purge leaves a marker message with this header.
	if bytes.Contains(resp.Message.Header, []byte("KV-Operation: DEL")) ||
		bytes.Contains(resp.Message.Header, []byte("KV-Operation: PURGE")) {
		return nil, jetstream.ErrKeyNotFound
	}
	return idEntry{bucket: l.Bucket(), key: key, value: resp.Message.Data, rev: resp.Message.Seq, at: resp.Message.Time}, nil
}

// idEntry is a KeyValueEntry read by leaderKV.
type idEntry struct {
	bucket, key string
	value       []byte
	rev         uint64
	at          time.Time
}

func (e idEntry) Bucket() string                  { return e.bucket }
func (e idEntry) Key() string                     { return e.key }
func (e idEntry) Value() []byte                   { return e.value }
func (e idEntry) Revision() uint64                { return e.rev }
func (e idEntry) Created() time.Time              { return e.at }
func (e idEntry) Delta() uint64                   { return 0 }
func (e idEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }
