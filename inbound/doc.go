// Package inbound receives CRM webhooks, queues them durably in JetStream,
// validates them stringently and writes them to the product database.
//
// The receiver (HTTP) verifies the signature first (Standard Webhooks by
// default, pluggable Verifier), splits a body into items (one object or a
// JSON array), and answers 2xx only after JetStream acked every item
// (Nats-Msg-Id = <source>:<item id>, so CRM retries are deduplicated). The
// writer runs ordered lanes (stage "inbound") over the inbound stream: JSON
// Schema, semantic and referential checks, then one transaction that
// writes the mapped row, advances the entity's version and records the
// webhook id, with a stale-update guard and loop prevention. Invalid items
// are parked with every problem; while the database is down the lane holds.
// See README.md.
package inbound
