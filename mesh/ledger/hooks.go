package ledger

import (
	"context"
	"time"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// maxErrorLen bounds the error text a parked record keeps.
const maxErrorLen = 512

// FromMsg starts the record of step for lane message m of stage: event
// id, type, key, partition, sequence, deliveries and attempts.
func FromMsg(step Step, stage topology.Stage, m *lane.Msg, eventID string) Record {
	return Record{Step: step, Stage: stage, EventID: eventID, Type: m.Type, KeyToken: m.KeyToken,
		Partition: m.Partition, At: time.Now().UTC(), Seq: m.StreamSeq, Deliveries: m.NumDelivered,
		Attempts: m.Failures + 1, InHand: m.InHand, Replay: m.Header.Get(lane.HeaderReplay)}
}

// RecordParks is a lane.Config.BeforeAck hook that writes the record of
// every park to w (after decorate, if set, adds what the stage knows)
// while the runner publishes the parked copy, and has the runner wait for
// it before the ack. Nil when w is nil (the lanes skip the call).
func RecordParks(w *Writer, names topology.Names, decorate func(*Record, lane.Observation)) func(lane.Observation) func(context.Context) error {
	if w == nil {
		return nil
	}
	return func(o lane.Observation) func(context.Context) error {
		rec, ok := Parked(names, o)
		if !ok {
			return nil
		}
		if decorate != nil {
			decorate(&rec, o)
		}
		return w.Write(rec).Wait
	}
}

// Parked returns the record of a park the lane runner is about to carry
// out (lane.Config.BeforeAck); ok is false for any other outcome. The
// parked stream holds the message itself; this record keeps the park in
// the event's history after a replay or discard.
func Parked(names topology.Names, o lane.Observation) (r Record, ok bool) {
	if o.Kind != lane.KindPark || o.Msg == nil {
		return Record{}, false
	}
	m := o.Msg
	stream, _ := names.StageFilter(o.Stage, 0)
	r = FromMsg(StepParked, o.Stage, m, EventID(m.Data, m.Header, stream, m.StreamSeq))
	r.Reason = o.Outcome.Reason
	if o.Outcome.Err != nil {
		r.Error = o.Outcome.Err.Error()
		if len(r.Error) > maxErrorLen {
			r.Error = r.Error[:maxErrorLen] + "…"
		}
	}
	if o.Stage == topology.StageEnricher {
		r.AcceptedAt = m.Stored
	} else {
		r.EnrichedAt = m.Stored
	}
	return r, true
}
