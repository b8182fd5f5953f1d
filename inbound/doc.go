// Package inbound receives CRM webhooks, queues them durably in JetStream,
// validates them stringently and writes them to the product database.
//
// The receiver (HTTP) verifies the signature first (Standard Webhooks by
// default; declarative HMAC schemes and presets; pluggable Verifier), maps
// the body to items with the source's jq envelope, and answers 2xx only
// after JetStream acked every item (Nats-Msg-Id = <source>:<dedupe id>, so
// CRM retries are deduplicated). An authenticated body is never refused for
// its shape: items it cannot route are stored and parked. The
// writer runs ordered lanes (stage "inbound") over the inbound stream: JSON
// Schema, semantic and referential checks, then one transaction that
// writes the mapped row, advances the entity's version and records the
// webhook id, with a stale-update guard and loop prevention. Invalid items
// are parked with every problem; while the database is down the lane holds.
// See README.md.
package inbound
