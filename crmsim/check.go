package crmsim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Report is the result of Check or SelfCheck.
type Report struct {
	// Keys lists only the keys with a finding, sorted by key.
	Keys []KeyReport `json:"keys"`
	// Totals sums the findings over every key.
	Totals Totals `json:"totals"`
}

// KeyReport is what was found for one key.
type KeyReport struct {
	Key string `json:"key"`
	// Missing ids never got a 2xx, in expected order.
	Missing []string `json:"missing,omitempty"`
	// MoreMissing (SelfCheck only) counts missing ids beyond the first
	// 10000 listed for a key.
	MoreMissing int `json:"more_missing,omitempty"`
	// Reordered is the first pair whose first 2xx deliveries came in the
	// wrong order.
	Reordered *Reorder `json:"reordered,omitempty"`
	// Duplicates maps an id to its number of 2xx answers (> 1). Allowed
	// (the CRM deduplicates by Idempotency-Key) but counted.
	Duplicates map[string]int `json:"duplicates,omitempty"`
	// Unexpected ids got a 2xx but were not expected, in delivery order.
	Unexpected []string `json:"unexpected,omitempty"`
}

// Reorder names a pair delivered out of order: Earlier was produced before
// Later, but Later got its first 2xx first.
type Reorder struct {
	Earlier string `json:"earlier"`
	Later   string `json:"later"`
}

// Totals sums a Report.
type Totals struct {
	// Keys is the number of keys checked.
	Keys int `json:"keys"`
	// Expected is the number of ids expected (SelfCheck: inferred from the
	// smallest to the largest number seen per key).
	Expected int `json:"expected"`
	// Delivered is the number of distinct expected ids that got a 2xx.
	Delivered int `json:"delivered"`
	// Missing is the number of expected ids that never got a 2xx.
	Missing int `json:"missing"`
	// ReorderedKeys is the number of keys with a reordered pair.
	ReorderedKeys int `json:"reordered_keys"`
	// DuplicateIDs is the number of ids with more than one 2xx;
	// ExtraDeliveries the number of 2xx answers beyond the first.
	DuplicateIDs    int `json:"duplicate_ids"`
	ExtraDeliveries int `json:"extra_deliveries"`
	// Unexpected is the number of distinct unexpected ids that got a 2xx.
	Unexpected int `json:"unexpected"`
	// Unchecked (SelfCheck only) counts ids with a 2xx that do not end in
	// #<n> and so could not be checked.
	Unchecked int `json:"unchecked"`
	// Attempts is the number of requests recorded.
	Attempts int `json:"attempts"`
}

// OK reports no missing, reordered or unexpected ids. Duplicates are
// allowed.
func (r Report) OK() bool {
	t := r.Totals
	return t.Missing == 0 && t.ReorderedKeys == 0 && t.Unexpected == 0
}

// MarshalJSON adds "ok" to the JSON form.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		OK bool `json:"ok"`
		plain
	}{r.OK(), plain(r)})
}

// String summarises the report and its first findings, for test failures
// and logs.
func (r Report) String() string {
	t := r.Totals
	var b strings.Builder
	fmt.Fprintf(&b, "ok=%v keys=%d expected=%d delivered=%d missing=%d reordered_keys=%d "+
		"duplicate_ids=%d extra_deliveries=%d unexpected=%d unchecked=%d attempts=%d",
		r.OK(), t.Keys, t.Expected, t.Delivered, t.Missing, t.ReorderedKeys,
		t.DuplicateIDs, t.ExtraDeliveries, t.Unexpected, t.Unchecked, t.Attempts)
	const maxShown = 10
	for i, k := range r.Keys {
		if i == maxShown {
			fmt.Fprintf(&b, "\n  ... %d more keys", len(r.Keys)-maxShown)
			break
		}
		fmt.Fprintf(&b, "\n  %s:", k.Key)
		if len(k.Missing) > 0 {
			fmt.Fprintf(&b, " missing %s", shortList(k.Missing))
		}
		if k.Reordered != nil {
			fmt.Fprintf(&b, " reordered (%s delivered before %s)", k.Reordered.Later, k.Reordered.Earlier)
		}
		if len(k.Duplicates) > 0 {
			fmt.Fprintf(&b, " %d duplicated ids", len(k.Duplicates))
		}
		if len(k.Unexpected) > 0 {
			fmt.Fprintf(&b, " unexpected %s", shortList(k.Unexpected))
		}
	}
	return b.String()
}

func shortList(ids []string) string {
	if len(ids) <= 5 {
		return "[" + strings.Join(ids, " ") + "]"
	}
	return "[" + strings.Join(ids[:5], " ") + fmt.Sprintf(" ... +%d]", len(ids)-5)
}

// keyFindings accumulates one key's observations.
type keyFindings struct {
	KeyReport
	maxPos   int    // largest expected position delivered so far
	maxID    string // the id at maxPos
	anyFirst bool
}

func (f *keyFindings) delivered(pos int, id string) {
	if f.anyFirst && pos < f.maxPos && f.Reordered == nil {
		f.Reordered = &Reorder{Earlier: id, Later: f.maxID}
	}
	if !f.anyFirst || pos > f.maxPos {
		f.maxPos, f.maxID, f.anyFirst = pos, id, true
	}
}

func (f *keyFindings) finding() bool {
	return len(f.Missing) > 0 || f.MoreMissing > 0 || f.Reordered != nil || len(f.Duplicates) > 0 || len(f.Unexpected) > 0
}

type idPos struct {
	key string
	pos int
}

// Check compares the recorded 2xx deliveries with expected: per key, the
// event ids in the order they were produced. An id is matched by
// X-Sluice-Event-Id (or Idempotency-Key); an unexpected id is filed under
// X-Sluice-Key (or the part of its id before '#'). A repeated id in an
// expected list counts once, at its first position.
func (s *Sim) Check(expected map[string][]string) Report {
	return check(s.snapshot(), expected)
}

func check(snap snapshot, expected map[string][]string) Report {
	where := make(map[string]idPos, 1024)
	keys := make(map[string]*keyFindings, len(expected))
	var rep Report
	for k, ids := range expected {
		keys[k] = &keyFindings{KeyReport: KeyReport{Key: k}}
		for i, id := range ids {
			if _, dup := where[id]; !dup {
				where[id] = idPos{k, i}
				rep.Totals.Expected++
			}
		}
	}
	oks := make(map[string]okEntry, len(where))
	for i := 0; i < snap.n; i++ {
		r := snap.at(i)
		id := r.ID()
		if !r.OK() || id == "" {
			continue
		}
		e, again := oks[id]
		e.count++
		if again {
			oks[id] = e
			continue
		}
		if p, ok := where[id]; ok {
			e.key = p.key
			oks[id] = e
			keys[p.key].delivered(p.pos, id)
			continue
		}
		e.key = r.OrderKey()
		oks[id] = e
		f := keys[e.key]
		if f == nil {
			f = &keyFindings{KeyReport: KeyReport{Key: e.key}}
			keys[e.key] = f
		}
		f.Unexpected = append(f.Unexpected, id)
	}
	for k, ids := range expected {
		f := keys[k]
		for i, id := range ids {
			if p := where[id]; p.key != k || p.pos != i {
				continue // repeated id
			}
			if oks[id].count == 0 {
				f.Missing = append(f.Missing, id)
			} else {
				rep.Totals.Delivered++
			}
		}
	}
	addDuplicates(oks, keys)
	rep.Totals.Attempts = snap.n
	finish(&rep, keys)
	return rep
}

// okEntry counts the 2xx answers of one id and remembers its key.
type okEntry struct {
	count int
	key   string
}

func addDuplicates(oks map[string]okEntry, keys map[string]*keyFindings) {
	for id, e := range oks {
		if e.count < 2 {
			continue
		}
		f := keys[e.key]
		if f == nil {
			continue
		}
		if f.Duplicates == nil {
			f.Duplicates = map[string]int{}
		}
		f.Duplicates[id] = e.count
	}
}

func finish(rep *Report, keys map[string]*keyFindings) {
	rep.Totals.Keys = len(keys)
	for _, f := range keys {
		t := &rep.Totals
		t.Missing += len(f.Missing) + f.MoreMissing
		t.Unexpected += len(f.Unexpected)
		if f.Reordered != nil {
			t.ReorderedKeys++
		}
		for _, c := range f.Duplicates {
			t.DuplicateIDs++
			t.ExtraDeliveries += c - 1
		}
		if f.finding() {
			rep.Keys = append(rep.Keys, f.KeyReport)
		}
	}
	slices.SortFunc(rep.Keys, func(a, b KeyReport) int { return strings.Compare(a.Key, b.Key) })
	if rep.Keys == nil {
		rep.Keys = []KeyReport{}
	}
}

// SelfCheck checks the recorded 2xx deliveries without an expected list:
// ids of the form <anything>#<n> are grouped by key (X-Sluice-Key, or the
// part before '#') and must arrive with increasing n and no gaps, starting
// at the smallest n seen. It cannot see ids missing after the largest n
// delivered for a key; use Check for that.
func (s *Sim) SelfCheck() Report {
	return selfCheck(s.snapshot())
}

// maxListedGaps caps the missing ids SelfCheck lists per key (a stray id
// with a huge number must not make it list millions).
const maxListedGaps = 10000

type seqKey struct {
	keyFindings
	prefix string
	seen   map[int]bool
	lo, hi int
}

func selfCheck(snap snapshot) Report {
	var rep Report
	oks := make(map[string]okEntry, 1024)
	seqs := map[string]*seqKey{}
	for i := 0; i < snap.n; i++ {
		r := snap.at(i)
		id := r.ID()
		if !r.OK() || id == "" {
			continue
		}
		e, again := oks[id]
		e.count++
		if again {
			oks[id] = e
			continue
		}
		prefix, n, ok := splitSeq(id)
		if !ok {
			oks[id] = e
			rep.Totals.Unchecked++
			continue
		}
		e.key = r.OrderKey()
		oks[id] = e
		q := seqs[e.key]
		if q == nil {
			q = &seqKey{keyFindings: keyFindings{KeyReport: KeyReport{Key: e.key}}, prefix: prefix,
				seen: map[int]bool{}, lo: n, hi: n}
			seqs[e.key] = q
		}
		q.delivered(n, id)
		q.seen[n] = true
		q.lo, q.hi = min(q.lo, n), max(q.hi, n)
	}
	keys := make(map[string]*keyFindings, len(seqs))
	for k, q := range seqs {
		rep.Totals.Expected += q.hi - q.lo + 1
		rep.Totals.Delivered += len(q.seen)
		gaps := q.hi - q.lo + 1 - len(q.seen)
		for n := q.lo; n <= q.hi && len(q.Missing) < gaps && len(q.Missing) < maxListedGaps; n++ {
			if !q.seen[n] {
				q.Missing = append(q.Missing, q.prefix+"#"+strconv.Itoa(n))
			}
		}
		q.MoreMissing = gaps - len(q.Missing)
		keys[k] = &q.keyFindings
	}
	addDuplicates(oks, keys)
	rep.Totals.Attempts = snap.n
	finish(&rep, keys)
	return rep
}

// splitSeq splits "<prefix>#<n>" with n a positive decimal number.
func splitSeq(id string) (prefix string, n int, ok bool) {
	i := strings.LastIndexByte(id, '#')
	if i < 0 || i == len(id)-1 {
		return "", 0, false
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil || n < 0 || id[i+1] == '+' || id[i+1] == '-' {
		return "", 0, false
	}
	return id[:i], n, true
}
