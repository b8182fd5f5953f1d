// Package leaderkv reads a KV bucket from its stream leader.
//
// nats.go reads a KV bucket with direct gets, which any replica of the
// bucket's stream answers; on an R3 cluster a follower can lag behind a
// write the leader already acknowledged (nats-server issue #4710). A
// decision taken on such a read can be wrong: the dispatcher saw no CRM id
// for a record it had just created, and a lane saw a key it had just held
// for a retry as free, or still replaying, and let the key's next event
// overtake the held one (a reorder, found by the chaos suite). A get
// through the stream's API ($JS.API.STREAM.MSG.GET) is answered by the
// leader and sees every acknowledged write. Writes, watches and listings go
// through the bucket as usual.
package leaderkv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KV is a bucket whose Get reads the stream leader.
type KV struct {
	jetstream.KeyValue
	nc      *nats.Conn
	subject string // <api prefix>STREAM.MSG.GET.KV_<bucket>
	prefix  string // $KV.<bucket>.
}

// New wraps bucket b; nc and apiPrefix are its JetStream's connection and
// API prefix (js.Conn(), js.Options().APIPrefix).
func New(b jetstream.KeyValue, nc *nats.Conn, apiPrefix string) KV {
	if apiPrefix == "" {
		apiPrefix = jetstream.DefaultAPIPrefix // jetstream.New leaves the exported field empty
	}
	return KV{
		KeyValue: b,
		nc:       nc,
		subject:  apiPrefix + "STREAM.MSG.GET.KV_" + b.Bucket(),
		prefix:   "$KV." + b.Bucket() + ".",
	}
}

// Get returns the latest value of key, or jetstream.ErrKeyNotFound when the
// key has none or was deleted.
func (l KV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
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
	return entry{bucket: l.Bucket(), key: key, value: resp.Message.Data, rev: resp.Message.Seq, at: resp.Message.Time}, nil
}

// entry is a KeyValueEntry read by KV.
type entry struct {
	bucket, key string
	value       []byte
	rev         uint64
	at          time.Time
}

func (e entry) Bucket() string                  { return e.bucket }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return e.at }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// Wrap wraps b when js can say its connection (a jetstream.JetStream can);
// otherwise it returns b as it is.
func Wrap(b jetstream.KeyValue, js any) jetstream.KeyValue {
	c, ok := js.(interface {
		Conn() *nats.Conn
		Options() jetstream.JetStreamOptions
	})
	if !ok {
		return b
	}
	return New(b, c.Conn(), c.Options().APIPrefix)
}
