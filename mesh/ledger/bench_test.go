package ledger_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

func benchRecord(i int) ledger.Record {
	return ledger.Record{Step: ledger.StepDelivered, EventID: "customer:42#" + strconv.Itoa(i), Type: "lead_status_changed",
		Key: "customer:42", KeyToken: "customer:42", Partition: 7, Stage: topology.StageDispatcher, At: time.Now().UTC(),
		Seq: uint64(i), Deliveries: 1, Attempts: 1, AcceptedAt: time.Now().UTC(),
		CRM: &ledger.CRMCall{Method: "PATCH", Path: "/api/leads/leads-17", Status: 200, Took: 1234567, Latency: 7654321}}
}

func BenchmarkRecordJSON(b *testing.B) {
	r := benchRecord(1)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = json.Marshal(&r)
	}
}

// BenchmarkWrite is the hot-path cost of one record (client side; the
// in-process server stores it meanwhile).
func BenchmarkWrite(b *testing.B) {
	s := meshtest.RunServer(b, "")
	nc, js := meshtest.Connect(b, s.ClientURL())
	names := topology.New(meshtest.Topology(4))
	ctx := context.Background()
	if err := ledger.Ensure(ctx, js, names, ledger.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	w, err := ledger.NewWriter(nc, names, ledger.WriterConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		w.Write(benchRecord(i))
	}
	if err := w.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}
