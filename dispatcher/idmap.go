package dispatcher

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/leaderkv"
	"sluice.dev/mesh/topology"
)

// ErrBadIDEntry means an id map entry given by an operator is invalid
// (object, id key or CRM id). The command refuses it, naming the field.
var ErrBadIDEntry = errors.New("dispatcher: invalid crm id entry")

// IDEntry is one entry of the CRM id map: the CRM record id of an entity.
type IDEntry struct {
	Object  string    `json:"object"`
	IDKey   string    `json:"id_key"`
	CRMID   string    `json:"crm_id"`
	Updated time.Time `json:"updated,omitzero"`
}

// IDMap is the operator's view of the CRM id map (sluice crm-ids): the
// same KV bucket and keys (<object>.<base64url(id_key)>) the dispatcher
// reads and writes.
type IDMap struct {
	kv   jetstream.KeyValue
	read leaderkv.KV
}

// OpenIDMap opens the id map bucket (ErrBucketMissing when the topology
// was never created).
func OpenIDMap(ctx context.Context, js jetstream.JetStream, names topology.Names) (*IDMap, error) {
	b, err := js.KeyValue(ctx, names.CRMIDBucket())
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrBucketMissing, names.CRMIDBucket())
		}
		return nil, fmt.Errorf("%w: open %s: %w", ErrIDStore, names.CRMIDBucket(), err)
	}
	return &IDMap{kv: b, read: leaderkv.New(b, js.Conn(), js.Options().APIPrefix)}, nil
}

// CheckIDEntry checks an entry an operator gives (crmID may be empty for
// a lookup or a removal).
func CheckIDEntry(object, idKey, crmID string) error {
	switch {
	case !validObject(object):
		return fmt.Errorf("%w: object %q: dot-separated A-Z a-z 0-9 _ - words", ErrBadIDEntry, object)
	case idKey == "" || len(idKey) > maxIDKeyLen || !utf8.ValidString(idKey):
		return fmt.Errorf("%w: id key: 1-%d bytes of UTF-8", ErrBadIDEntry, maxIDKeyLen)
	case len(crmID) > maxIDLen || strings.ContainsFunc(crmID, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return fmt.Errorf("%w: crm id: at most %d bytes, no control characters", ErrBadIDEntry, maxIDLen)
	}
	return nil
}

// Get returns the CRM id of an entity; found is false when none is known.
func (m *IDMap) Get(ctx context.Context, object, idKey string) (e IDEntry, found bool, err error) {
	if err := CheckIDEntry(object, idKey, ""); err != nil {
		return e, false, err
	}
	v, err := m.read.Get(ctx, kvKey(object, idKey))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return e, false, nil
	case err != nil:
		return e, false, fmt.Errorf("%w: get: %w", ErrIDStore, err)
	}
	return IDEntry{Object: object, IDKey: idKey, CRMID: string(v.Value()), Updated: v.Created()}, true, nil
}

// Set maps an entity to crmID and returns the id it replaced ("" if none).
func (m *IDMap) Set(ctx context.Context, object, idKey, crmID string) (prev string, err error) {
	if crmID == "" {
		return "", fmt.Errorf("%w: crm id: required", ErrBadIDEntry)
	}
	old, found, err := m.Get(ctx, object, idKey)
	if err != nil {
		return "", err
	}
	if _, err := m.kv.Put(ctx, kvKey(object, idKey), []byte(crmID)); err != nil {
		return "", fmt.Errorf("%w: put: %w", ErrIDStore, err)
	}
	if found {
		prev = old.CRMID
	}
	return prev, nil
}

// Remove forgets an entity's CRM id (the next upsert creates, the next
// update parks "no CRM id"). found is false when none was known.
func (m *IDMap) Remove(ctx context.Context, object, idKey string) (found bool, err error) {
	_, found, err = m.Get(ctx, object, idKey)
	if err != nil || !found {
		return false, err
	}
	if err := m.kv.Delete(ctx, kvKey(object, idKey)); err != nil {
		return false, fmt.Errorf("%w: delete: %w", ErrIDStore, err)
	}
	return true, nil
}

// List calls f with every entry of object ("" = every object), in key
// order of the bucket listing.
func (m *IDMap) List(ctx context.Context, object string, f func(IDEntry) error) error {
	filter := ">"
	if object != "" {
		if !validObject(object) {
			return fmt.Errorf("%w: object %q", ErrBadIDEntry, object)
		}
		filter = object + ".*"
	}
	lister, err := m.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return fmt.Errorf("%w: list: %w", ErrIDStore, err)
	}
	defer func() { _ = lister.Stop() }()
	for k := range lister.Keys() {
		obj, idKey, ok := parseKVKey(k)
		if !ok {
			continue
		}
		e, err := m.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: get %s: %w", ErrIDStore, k, err)
		}
		if err := f(IDEntry{Object: obj, IDKey: idKey, CRMID: string(e.Value()), Updated: e.Created()}); err != nil {
			return err
		}
	}
	return nil
}

// parseKVKey splits <object>.<base64url(id key)>.
func parseKVKey(k string) (object, idKey string, ok bool) {
	i := strings.LastIndexByte(k, '.')
	if i <= 0 {
		return "", "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(k[i+1:])
	if err != nil {
		return "", "", false
	}
	return k[:i], string(b), true
}
