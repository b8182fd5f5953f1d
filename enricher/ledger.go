package enricher

import (
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// recordEnriched writes the ledger record of a forwarded event
// (Deps.Ledger with ledger.enriched): called from the handler, so before
// the lane publishes the request and acks the event.
func (s *Service) recordEnriched(m *lane.Msg, id, key, out string, body []byte) {
	if !s.deps.Ledger.Wants(ledger.StepEnriched) {
		return
	}
	rec := ledger.FromMsg(ledger.StepEnriched, topology.StageEnricher, m, id)
	rec.Key, rec.AcceptedAt, rec.Out, rec.Body = key, m.Stored, out, body
	s.deps.Ledger.Write(rec)
}

// observer is the lanes' Observe hook: the ledger record of each park,
// then Deps.Observe.
func (s *Service) observer() func(lane.Observation) {
	return ledger.ObserveParks(s.deps.Ledger, s.deps.Names, nil, s.deps.Observe)
}
