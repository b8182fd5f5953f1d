package ingest

// InFlight reports the HTTP event requests being handled (tests only).
func (s *Service) InFlight() int64 { return s.inFlight.Load() }
