// Package mesh is the shared module of Sluice: the stream topology
// (topology), the ordered lane runner (lane), the event envelope (envelope),
// the user's event catalog (catalog), the embedded nats-server (embedded),
// configuration loading (config) and test helpers (meshtest).
//
// It holds no service logic: ingest, enricher, dispatcher, inbound and
// watchdog are their own modules and depend on this one.
package mesh
