package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/ingest/client"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

func Example() {
	ctx := context.Background()
	// An embedded JetStream server stands in for the Sluice deployment.
	dir, _ := os.MkdirTemp("", "sluice-example")
	defer os.RemoveAll(dir)
	srv, _ := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	go srv.Start()
	srv.ReadyForConnections(10 * time.Second)
	defer srv.Shutdown()

	// Reconnect forever: a server restart must not end the producer.
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	names := topology.New(topology.Config{Prefix: "example", StreamPrefix: "EXAMPLE"}.WithDefaults())
	if err := names.Ensure(ctx, js); err != nil { // done by Sluice in production
		panic(err)
	}

	c, err := client.New(client.Config{Source: "billing-cron"}, client.NewJetStream(js, names))
	if err != nil {
		panic(err)
	}
	ev := &envelope.Envelope{
		Type: "invoice_paid",
		Key:  "customer:7", // events of one key are stored in call order
		Data: json.RawMessage(`{"invoice":"INV-1","amount":120}`),
	}
	r, err := c.Publish(ctx, ev) // fills in ev.ID and ev.OccurredAt
	if err != nil {
		panic(err)
	}
	fmt.Println("stored at", r.StreamSeq, "duplicate:", r.Duplicate, "id set:", ev.ID == r.ID)

	// Publishing the same event again (same id) is harmless.
	r, _ = c.Publish(ctx, ev)
	fmt.Println("stored at", r.StreamSeq, "duplicate:", r.Duplicate)

	// Invalid events are refused before anything is sent, never retried.
	_, err = c.Publish(ctx, &envelope.Envelope{Type: "invoice paid", Data: json.RawMessage(`{}`)})
	var inv *client.InvalidError
	if errors.As(err, &inv) {
		for _, f := range inv.Fields {
			fmt.Println(errors.Is(err, client.ErrInvalid), f.Field, "-", f.Reason)
		}
	}
	// Output:
	// stored at 1 duplicate: false id set: true
	// stored at 1 duplicate: true
	// true type - must be 1-64 characters of A-Z a-z 0-9 _ -
	// true key - required (or derived from data by the type's key expression)
}

// BenchmarkPublishJetStream publishes through the client from parallel
// goroutines, each over its own keys, and reports events/s.
func BenchmarkPublishJetStream(b *testing.B) {
	h := setupJS(b)
	c, err := client.New(client.Config{}, client.NewJetStream(h.js, h.names))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	data := json.RawMessage(`{"customer_id":7,"name":"Priya Iyer","email":"priya@example.in","city":"Pune"}`)
	var worker atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		w := worker.Add(1)
		n := 0
		for pb.Next() {
			n++
			key := fmt.Sprintf("customer:%d", w*1000+int64(n%50))
			if _, err := c.Publish(ctx, &envelope.Envelope{Type: "customer_updated", Key: key, Data: data}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
