package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"

	"sluice.dev/mesh/version"
)

// ServiceName and ServiceVersion identify the micro service ($SRV.*).
const ServiceName = "sluice-ingest"

// ServiceVersion is Sluice's one version (mesh/version).
var ServiceVersion = version.String()

func (s *Service) validateSubject() string { return s.deps.Names.Config().Prefix + ".ingest.validate" }
func (s *Service) publishSubject() string  { return s.deps.Names.Config().Prefix + ".ingest.publish" }

// Stats is the service-specific part of the micro STATS reply (the "data"
// of each endpoint): totals over both transports since start.
type Stats struct {
	// Accepted events JetStream acked, Duplicates among them.
	Accepted   uint64 `json:"accepted"`
	Duplicates uint64 `json:"duplicates"`
	// Conflicts are events refused (409) because their id was stored with
	// another key, body or producer.
	Conflicts uint64 `json:"conflicts"`
	// Rejected events (in requests refused as invalid) and RejectedRequests
	// refused before their events could be counted (413, 415).
	Rejected         uint64 `json:"rejected"`
	RejectedRequests uint64 `json:"rejected_requests"`
	// Unauthorized requests answered 401 (no or an unknown bearer token).
	Unauthorized uint64 `json:"unauthorized"`
	// Unavailable requests answered 503.
	Unavailable uint64 `json:"unavailable"`
	// LastStreamSeq and LastAcceptedAt show progress.
	LastStreamSeq  uint64     `json:"last_stream_seq"`
	LastAcceptedAt *time.Time `json:"last_accepted_at,omitempty"`
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	st := Stats{
		Accepted: s.stats.accepted.Load(), Duplicates: s.stats.duplicates.Load(), Conflicts: s.stats.conflicts.Load(),
		Rejected: s.stats.rejected.Load(), RejectedRequests: s.stats.rejectedRequests.Load(),
		Unauthorized: s.stats.unauthorized.Load(),
		Unavailable:  s.stats.unavailable.Load(), LastStreamSeq: s.stats.lastSeq.Load(),
	}
	if ns := s.stats.lastAt.Load(); ns != 0 {
		t := time.Unix(0, ns).UTC()
		st.LastAcceptedAt = &t
	}
	return st
}

// addEndpoints adds the two endpoints to the micro service. Requests
// carry the same bodies as HTTP: one envelope, or an NDJSON batch when the
// message has the header "Content-Type: application/x-ndjson". Replies are
// the HTTP reply bodies; failures are micro errors whose code is the HTTP
// status (Nats-Service-Error-Code: 400, 413, 503…).
func (s *Service) addEndpoints(svc micro.Service) error {
	for _, ep := range []struct {
		name, subject string
		publish       bool
	}{{"validate", s.validateSubject(), false}, {"publish", s.publishSubject(), true}} {
		h := s.microHandler(ep.publish)
		if err := svc.AddEndpoint(ep.name, micro.HandlerFunc(h), micro.WithEndpointSubject(ep.subject)); err != nil {
			return err
		}
	}
	return nil
}

// microHandler serves one endpoint. Requests of one endpoint are handled
// one at a time, in arrival order, so two requests a producer sends on one
// connection are stored in that order.
func (s *Service) microHandler(publish bool) func(micro.Request) {
	return func(req micro.Request) {
		if !s.gate.enter() {
			s.microReply(req, http.StatusServiceUnavailable, Response{Error: ErrUnavailable.Error() + ": ingest is stopping"})
			return
		}
		defer s.gate.leave()
		batch, err := batchMedia(req.Headers().Get("Content-Type"))
		if err != nil && req.Headers().Get("Content-Type") == "" {
			batch, err = false, nil // NATS requests default to one envelope
		}
		if err != nil {
			s.stats.rejectedRequests.Add(1)
			s.microReply(req, http.StatusUnsupportedMediaType, Response{Error: err.Error()})
			return
		}
		status, resp := s.process(context.Background(), request{body: req.Data(), batch: batch, publish: publish})
		s.microReply(req, status, resp)
	}
}

func (s *Service) microReply(req micro.Request, status int, resp Response) {
	b, err := json.Marshal(resp)
	if err != nil {
		b = []byte(`{"error":"encoding the reply"}`)
	}
	if status < 300 {
		err = req.Respond(b)
	} else {
		err = req.Error(strconv.Itoa(status), resp.Error, b)
	}
	if err != nil {
		s.log.Warn().Err(err).Str("subject", req.Subject()).Msg("replying to a NATS request")
	}
}
