package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

// importLedger remembers, per file, the rows whose events were stored (the
// imports KV bucket), so running a file again sends only the rows not
// stored yet — also after the events stream's duplicate window.
type importLedger struct {
	kv   jetstream.KeyValue
	file string // the file's KV token: sha256 of its base name
}

// openImportLedger opens (creating it if need be) the imports bucket for
// the file named base.
func openImportLedger(ctx context.Context, js jetstream.JetStream, names topology.Names, base string) (*importLedger, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, names.ImportsConfig())
	if err != nil {
		return nil, fmt.Errorf("import ledger %s: %w", names.ImportsBucket(), err)
	}
	sum := sha256.Sum256([]byte(base))
	return &importLedger{kv: kv, file: hex.EncodeToString(sum[:16])}, nil
}

// rowKey is an event's KV key: its id "imp:<hex>" under the file.
func (l *importLedger) rowKey(id string) string {
	return l.file + "." + strings.TrimPrefix(id, "imp:")
}

// unsent returns the events of evs whose rows are not recorded as stored,
// in order, and how many were.
func (l *importLedger) unsent(ctx context.Context, evs []*envelope.Envelope) ([]*envelope.Envelope, int, error) {
	done := map[string]bool{}
	keys, err := l.kv.ListKeysFiltered(ctx, l.file+".*")
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, 0, fmt.Errorf("import ledger: %w", err)
	}
	if keys != nil {
		for k := range keys.Keys() {
			done[k] = true
		}
	}
	out := make([]*envelope.Envelope, 0, len(evs))
	for _, e := range evs {
		if !done[l.rowKey(e.ID)] {
			out = append(out, e)
		}
	}
	return out, len(evs) - len(out), nil
}

// stored records the rows of evs as stored (after their events were).
func (l *importLedger) stored(ctx context.Context, evs []*envelope.Envelope) error {
	now := []byte(time.Now().UTC().Format(time.RFC3339))
	for _, e := range evs {
		if _, err := l.kv.Put(ctx, l.rowKey(e.ID), now); err != nil {
			return fmt.Errorf("import ledger: %w", err)
		}
	}
	return nil
}
