// Package client is the Go library producers use to send events to Sluice.
//
// It completes envelopes (a time-ordered random id when absent, occurred_at
// now when zero, a default source), checks them locally, publishes them over
// JetStream (NewJetStream: Nats-Msg-Id = id, waits for the stream's ack) or
// over ingest's HTTP API (NewHTTP: POST /v1/events), retries transient
// failures with the same id (so the server drops duplicates), and keeps
// per-key order for concurrent callers: a key's next event is sent only
// after the previous one was acked, callers of one key are served in call
// order, and different keys proceed in parallel.
//
//	c, err := client.New(client.Config{Source: "website"}, client.NewJetStream(js, names))
//	r, err := c.Publish(ctx, &envelope.Envelope{Type: "customer_signed_up", Key: "customer:7", Data: data})
//	switch {
//	case errors.Is(err, client.ErrInvalid):     // fix the event; errors.As an *InvalidError for fields
//	case errors.Is(err, client.ErrUnavailable): // not known to be stored: publish again later, same id
//	case errors.Is(err, client.ErrRejected):    // token, size: fix the configuration
//	}
//
// See README.md for the configuration keys and the guarantees.
package client
