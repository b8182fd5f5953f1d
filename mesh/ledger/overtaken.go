package ledger

import (
	"sort"
	"time"
)

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
		if i == len(d) {
			continue
		}
		t.Reordered++
		if len(k.Reordered) == 0 {
			t.ReorderedKeys++
		}
		if len(k.Reordered) < maxListed {
			k.Reordered = append(k.Reordered, Reorder{Earlier: p.ref(now), Later: d[i].ref(now)})
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
