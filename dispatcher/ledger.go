package dispatcher

import (
	"strconv"
	"time"

	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// recordDelivered writes the ledger record of a delivery (Deps.Ledger):
// called from the handler, so before the lane acks the message.
func (s *Service) recordDelivered(m *lane.Msg, r crmreq.Request, c *ledger.CRMCall, latency time.Duration) {
	if s.deps.Ledger == nil {
		return
	}
	rec := ledger.FromMsg(ledger.StepDelivered, topology.StageDispatcher, m, r.EventID)
	rec.Key, rec.AcceptedAt, rec.EnrichedAt = r.Key, r.AcceptedAt, m.Stored
	c.Latency = latency
	rec.CRM = c
	s.deps.Ledger.Write(rec)
}

// observer is the lanes' Observe hook: the ledger record of each park
// (with the CRM's status when it answered), then Deps.Observe. Nil when
// neither is set, so the lanes skip the call.
func (s *Service) observer() func(lane.Observation) {
	return ledger.ObserveParks(s.deps.Ledger, s.deps.Names, func(rec *ledger.Record, o lane.Observation) {
		if st, err := strconv.Atoi(o.Outcome.Header.Get(HeaderCRMStatus)); err == nil {
			rec.CRM = &ledger.CRMCall{Status: st}
		}
	}, s.deps.Observe)
}
