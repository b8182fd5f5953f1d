package ledger_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

func setup(t *testing.T) (*nats.Conn, jetstream.JetStream, topology.Names) {
	t.Helper()
	s := meshtest.RunServer(t, "")
	nc, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(4))
	require.NoError(t, names.Ensure(context.Background(), js))
	return nc, js, names
}

func TestWriterRecordsAreReadBackOnceEach(t *testing.T) {
	ctx := context.Background()
	nc, js, names := setup(t)
	require.NoError(t, ledger.Ensure(ctx, js, names, ledger.DefaultConfig()))
	var c ledger.Counters
	w, err := ledger.NewWriter(nc, names, ledger.WriterConfig{Counters: &c, MaxPending: 8,
		SensitiveFields: []string{"email"}, Bodies: true})
	require.NoError(t, err)
	require.Same(t, nc, w.Conn())
	for i := range 100 {
		r := ledger.Record{Step: ledger.StepDelivered, EventID: "k#" + string(rune('a'+i%26)) + time.Duration(i).String(),
			Type: "t", KeyToken: "k~2E1", Stage: topology.StageDispatcher, Seq: uint64(i + 1), Deliveries: 1, Attempts: 1,
			At: time.Now(), CRM: &ledger.CRMCall{Status: 200}}
		w.Write(r)
		w.Write(r) // a repeat (a retried publish) is read once
	}
	w.Write(ledger.Record{Step: ledger.StepEnriched, EventID: "body", Type: "t", KeyToken: "k~2E1",
		Body: json.RawMessage(`{"email":"x@example.com","name":"n","nested":{"Email":"y"}}`)})
	require.NoError(t, w.Flush(ctx))
	require.EqualValues(t, 201, c.Written.Load())
	require.Zero(t, c.Unstored.Load())

	src := &ledger.Source{JS: js, Names: names}
	recs, last, err := src.Records(ctx, ledger.Filter{Key: "k.1"}, time.Time{}, 0)
	require.NoError(t, err)
	require.Len(t, recs, 101)
	require.EqualValues(t, 201, last)
	require.Equal(t, "k.1", recs[0].Key, "the key is filled in from its token")
	require.Equal(t, uint64(1), recs[0].LedgerSeq)
	require.JSONEq(t, `{"email":"[redacted]","name":"n","nested":{"Email":"[redacted]"}}`, string(recs[100].Body))
	// The type filter narrows to nothing.
	recs, _, err = src.Records(ctx, ledger.Filter{Type: "other"}, time.Time{}, 0)
	require.NoError(t, err)
	require.Empty(t, recs)
}

func TestWaitResendsARecordTheServerRefused(t *testing.T) {
	ctx := context.Background()
	nc, js, names := setup(t)
	var c ledger.Counters
	w, err := ledger.NewWriter(nc, names, ledger.WriterConfig{Counters: &c})
	require.NoError(t, err)
	defer w.Close(ctx)
	// No ledger stream yet: the publish gets no answer from JetStream.
	p := w.Write(ledger.Record{Step: ledger.StepDelivered, EventID: "e1", Type: "t", KeyToken: "k", Seq: 1})
	require.Eventually(t, func() bool { return c.Failed.Load() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, ledger.Ensure(ctx, js, names, ledger.DefaultConfig()))
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, p.Wait(wctx), "Wait sends the record again")
	require.EqualValues(t, 1, c.Retried.Load())
	require.Zero(t, c.Unstored.Load())
	recs, _, err := (&ledger.Source{JS: js, Names: names}).Records(ctx, ledger.Filter{}, time.Time{}, 0)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, "e1", recs[0].EventID)
}

// A record that cannot be stored is never reported stored: Wait fails
// (the lane then holds its message), and Close ends a Wait that is still
// resending instead of letting it sleep on.
func TestWaitFailsWhenTheRecordIsNotStoredAndCloseEndsIt(t *testing.T) {
	ctx := context.Background()
	nc, _, names := setup(t)
	var c ledger.Counters
	w, err := ledger.NewWriter(nc, names, ledger.WriterConfig{Counters: &c})
	require.NoError(t, err)
	rec := ledger.Record{Step: ledger.StepDelivered, EventID: "e1", Type: "t", KeyToken: "k", Seq: 1}
	err = w.Write(rec).Wait(ctx) // no ledger stream: never stored
	require.Error(t, err)
	require.EqualValues(t, 1, c.Unstored.Load())

	p := w.Write(rec)
	waited := make(chan error, 1)
	go func() { waited <- p.Wait(ctx) }()
	require.NoError(t, w.Close(ctx))
	select {
	case err := <-waited:
		require.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a resending Wait")
	}
	require.ErrorIs(t, w.Write(rec).Wait(ctx), ledger.ErrWriterClosed, "nothing is sent after Close")
	require.NoError(t, w.Close(ctx), "Close is idempotent")
}

func TestNilWriterWritesNothing(t *testing.T) {
	var w *ledger.Writer
	require.NoError(t, w.Write(ledger.Record{Step: ledger.StepDelivered}).Wait(context.Background()))
	require.NoError(t, w.Flush(context.Background()))
	require.NoError(t, w.Close(context.Background()))
	require.Nil(t, w.Conn())
}

func TestEventIDIsTheSameInEveryStream(t *testing.T) {
	env := []byte(`{"id":"cust-1#4","type":"t","data":{"id":"inner"}}`)
	req := []byte(`{"event_id":"cust-1#4","type":"t","key":"k"}`)
	h := func(id string) nats.Header { return nats.Header{nats.MsgIdHdr: []string{id}} }
	for _, tc := range []struct {
		name   string
		data   []byte
		header nats.Header
		want   string
	}{
		{"envelope", env, h("whatever"), "cust-1#4"},
		{"crm request", req, h("cust-1#4:replay:r1:7"), "cust-1#4"},
		{"invalid envelope: its message id", []byte(`{"id": 12}`), h("m-9"), "m-9"},
		{"parked invalid envelope: the message id without park and replay", []byte(`not json`), h("park:enricher:m-9:replay:r1:3"), "m-9"},
		{"no id at all: stream and sequence", []byte(`[]`), nil, "S_EVENTS:42"},
		{"an id with a space is not an id", []byte(`{"id":"a b"}`), h("m-1"), "m-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, ledger.EventID(tc.data, tc.header, "S_EVENTS", 42))
		})
	}
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, ledger.DefaultConfig().Validate())
	require.True(t, ledger.DefaultConfig().Enabled)
	bad := ledger.Config{MaxAge: time.Second, MaxBytes: -5, SensitiveFields: []string{" "}}
	err := bad.Validate()
	require.ErrorContains(t, err, "ledger.max_age")
	require.ErrorContains(t, err, "ledger.max_bytes")
	require.ErrorContains(t, err, "ledger.max_pending")
	require.ErrorContains(t, err, "ledger.sensitive_fields[0]")
}

func TestAuditNeedsTheLedgerStream(t *testing.T) {
	_, js, names := setup(t)
	_, err := ledger.Audit(context.Background(), js, names, ledger.AuditOptions{})
	require.ErrorIs(t, err, ledger.ErrNoLedger)
}

func TestAuditSummaryIsPublishedAndReadBack(t *testing.T) {
	ctx := context.Background()
	_, js, names := setup(t)
	got, err := ledger.LastSummary(ctx, js, names)
	require.NoError(t, err)
	require.Nil(t, got, "no ledger stream, no summary")
	require.NoError(t, ledger.Ensure(ctx, js, names, ledger.DefaultConfig()))
	res, err := ledger.Audit(ctx, js, names, ledger.AuditOptions{})
	require.NoError(t, err)
	require.True(t, res.OK())
	require.Zero(t, res.Totals.Accepted)
	for _, lost := range []int{3, 0} {
		res.Totals.Lost = lost
		require.NoError(t, ledger.PublishSummary(ctx, js, names, ledger.Summarize(res)))
	}
	got, err = ledger.LastSummary(ctx, js, names)
	require.NoError(t, err)
	require.NotNil(t, got)
	require.True(t, got.OK)
	// The summary is not a record: audits skip it.
	recs, _, err := (&ledger.Source{JS: js, Names: names}).Records(ctx, ledger.Filter{}, time.Time{}, 0)
	require.NoError(t, err)
	require.Empty(t, recs)
}
