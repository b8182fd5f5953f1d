package ledger

import (
	"sort"
	"time"
)

// Per-key order checks of a reconciliation.

// reorders finds the key's delivered events whose first delivery came
// before that of an event accepted earlier. When each was first delivered
// is read two ways, and a pair counts only when both agree:
//
//   - the ledger order of the delivered records: each is stored before
//     the ack that lets the key's next request go. But a record stored
//     twice (a resend after a lost PubAck, a redelivery) has a later
//     copy;
//   - the sequence of the message delivered: a dispatcher lane sends its
//     partition's requests one at a time in dispatch stream order, an
//     inline lane in events stream order, and a replay re-sends with a
//     new, higher sequence. But sequences start again if the stream is
//     ever recreated, and the two streams' sequences say nothing of each
//     other: for a pair delivered one inline and one through the dispatch
//     stream (a key delivered across a switch of dispatcher.inline) the
//     ledger order alone decides.
//
// Each walk takes one order and confirms its candidates with the other;
// the sequence walk runs over each kind of delivery on its own.
func (k *keyAcc) reorders(now time.Time, t *Totals) {
	byLedger := func(l *life) uint64 { return l.delivered[0].LedgerSeq }
	bySeq := func(l *life) uint64 {
		m := l.delivered[0].Seq
		for _, d := range l.delivered[1:] {
			if d.Inline == l.delivered[0].Inline {
				m = min(m, d.Seq)
			}
		}
		return m
	}
	inline := func(l *life) bool { return l.delivered[0].Inline }
	seen := map[[2]string]bool{}
	report := func(earlier, later *life) {
		pair := [2]string{earlier.ev.ID, later.ev.ID}
		if !seen[pair] {
			seen[pair] = true
			k.reordered(earlier, later, now, t)
		}
	}
	// By the ledger, confirmed by the sequences where they compare.
	var latest *life
	for _, l := range k.delivered {
		if latest == nil || byLedger(l) > byLedger(latest) {
			latest = l
			continue
		}
		// latest was accepted before l but first delivered after it.
		if inline(l) != inline(latest) || bySeq(l) < bySeq(latest) {
			report(latest, l)
		}
	}
	// By the sequences, one kind of delivery at a time, confirmed by the
	// ledger.
	for _, kind := range []bool{false, true} {
		latest = nil
		for _, l := range k.delivered {
			if inline(l) != kind {
				continue
			}
			if latest == nil || bySeq(l) > bySeq(latest) {
				latest = l
				continue
			}
			if byLedger(l) < byLedger(latest) {
				report(latest, l)
			}
		}
	}
}

// reordered counts and lists (up to maxListed) the pair: earlier was
// accepted first, later went to the CRM first.
func (k *keyAcc) reordered(earlier, later *life, now time.Time, t *Totals) {
	t.Reordered++
	if len(k.Reordered) == 0 {
		t.ReorderedKeys++
	}
	if len(k.Reordered) < maxListed {
		k.Reordered = append(k.Reordered, Reorder{Earlier: earlier.ref(now), Later: later.ref(now)})
	}
}

// overtaken finds the key's events that are parked now while an event of
// the key accepted after them was delivered after they were parked.
//
// An outbound stage (enricher, dispatcher) isolates keys: once an event is
// parked, every later event of its key is parked behind it until an
// operator's replay or discard (or, for a held key, the automatic
// replay). A parked event with a later one delivered past it is therefore
// an order break the delivery walk (reorders) cannot see, because the
// parked event has no delivery to compare. When the park happened is its
// parked record's ledger sequence (every delivered record after it was
// stored after the park); without a record of that stage (a crash lost
// it) the parked message's time, with discardGrace for the clocks of two
// processes. Each parked event is reported once, with the first event
// accepted after it that overtook it.
func (k *keyAcc) overtaken(now time.Time, t *Totals) {
	if len(k.parked) == 0 || len(k.delivered) == 0 {
		return
	}
	d := k.delivered // in accepted order
	// lastSeq[i], lastAt[i]: the latest ledger sequence and time of any
	// delivery of d[i:].
	lastSeq := make([]uint64, len(d)+1)
	lastAt := make([]time.Time, len(d)+1)
	for i := len(d) - 1; i >= 0; i-- {
		lastSeq[i], lastAt[i] = lastSeq[i+1], lastAt[i+1]
		for _, r := range d[i].delivered {
			lastSeq[i] = max(lastSeq[i], r.LedgerSeq)
			if r.At.After(lastAt[i]) {
				lastAt[i] = r.At
			}
		}
	}
	for _, p := range k.parked {
		if p.parkedNow.KeyToken != p.ev.KeyToken {
			continue // parked without its key (an unroutable subject): nothing was blocked
		}
		after := parkedAfter(p)
		i := sort.Search(len(d), func(i int) bool { return d[i].ev.Seq > p.ev.Seq })
		if !after(lastSeq[i], lastAt[i]) {
			continue
		}
		for ; i < len(d); i++ {
			if deliveredAfter(d[i], after) {
				break
			}
		}
		if i < len(d) {
			k.reordered(p, d[i], now, t)
		}
	}
}

// parkedAfter returns whether a delivery stored at ledger sequence seq
// (time at) came after p, an event parked now, was parked.
func parkedAfter(p *life) func(seq uint64, at time.Time) bool {
	if r := p.parkedRec; r != nil && r.Stage == p.parkedNow.Stage {
		return func(seq uint64, _ time.Time) bool { return seq > r.LedgerSeq }
	}
	parked := p.parkedNow.At.Add(discardGrace)
	return func(_ uint64, at time.Time) bool { return at.After(parked) }
}

func deliveredAfter(l *life, after func(uint64, time.Time) bool) bool {
	for _, r := range l.delivered {
		if after(r.LedgerSeq, r.At) {
			return true
		}
	}
	return false
}
