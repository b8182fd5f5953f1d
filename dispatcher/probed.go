package dispatcher

import (
	"sync"
	"time"
)

// probeAnswers keeps, by event id, the 2xx answer a paused lane's probe
// got. The CRM has applied that request, so the lane's next try of the
// message uses the answer instead of sending the request again: a CRM
// that ignores Idempotency-Key (most do) would otherwise apply it twice —
// a second record for a create, a second note or email for a send.
//
// In memory, like uncertainSet: at most one entry per paused lane, taken
// as soon as the lane resumes. A process that dies in between sends the
// request again on redelivery, as after any crash (crm.find looks a
// create up first). An answer not taken within probeAnswerTTL (the
// message went to another replica) is forgotten.
type probeAnswers struct {
	mu sync.Mutex
	m  map[string]probeAnswer
}

type probeAnswer struct {
	method, path string
	res          response
	at           time.Time
}

// probeAnswerTTL bounds how long an answer waits for its lane.
const probeAnswerTTL = 10 * time.Minute

// maxProbeAnswers bounds the set; a lane holds one at a time.
const maxProbeAnswers = 4096

func (p *probeAnswers) put(eventID, method, path string, res response) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]probeAnswer{}
	}
	if len(p.m) >= maxProbeAnswers {
		for id, a := range p.m {
			if a.expired() {
				delete(p.m, id)
			}
		}
		if len(p.m) >= maxProbeAnswers {
			return // the lane sends it again, as before
		}
	}
	p.m[eventID] = probeAnswer{method: method, path: path, res: res, at: time.Now()}
}

func (a probeAnswer) expired() bool { return time.Since(a.at) > probeAnswerTTL }

// has reports whether a probe's answer waits for eventID.
func (p *probeAnswers) has(eventID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.m[eventID]
	return ok && !a.expired()
}

// take returns and forgets the probe's answer to eventID's request, if it
// was the same request (method and path).
func (p *probeAnswers) take(eventID, method, path string) (response, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.m[eventID]
	if !ok {
		return response{}, false
	}
	delete(p.m, eventID)
	if a.method != method || a.path != path || a.expired() {
		return response{}, false
	}
	return a.res, true
}
