package watchdog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/topology"
)

// Condition kinds.
const (
	CondPauseOverrun   = "pause_overrun"
	CondPaused         = "paused"
	CondStall          = "stall"
	CondNoPuller       = "no_puller"
	CondRedelivery     = "redelivery_loop"
	CondParkedRising   = "parked_rising"
	CondServiceSilent  = "service_silent"
	CondStreamMissing  = "stream_missing"
	CondConsumerGone   = "consumer_missing"
	CondRestartFailed  = "restart_failed"
	restartTimeout     = 2 * time.Second
	infoRequestTimeout = 5 * time.Second
)

// laneState is what the watchdog remembers of one lane between polls.
type laneState struct {
	stage      topology.Stage
	p          int
	stream     string
	consumer   string
	filter     string
	seen       bool
	ackFloor   uint64
	delivered  uint64
	progressAt time.Time // last ack/delivery progress, or last time idle or paused
	pullerAt   time.Time // last time a puller was there, or idle or paused
	loopPolls  int
	restartAt  time.Time
}

// restartReq is a lane restart to request after the poll.
type restartReq struct {
	ls   *laneState
	cond string
}

func (w *Watchdog) poll(ctx context.Context) {
	now := w.now()
	var errs []error
	w.cur = &sample{at: now, lag: map[topology.Stage]uint64{}}
	present := w.checkStreams(ctx, now, &errs)
	var restarts []restartReq
	for _, stage := range laneStages {
		stream, _ := w.names.StageFilter(stage, 0)
		if stream == "" || !present[stream] {
			continue
		}
		rs, err := w.checkStage(ctx, now, stage, stream)
		if err != nil {
			errs = append(errs, err)
		}
		restarts = append(restarts, rs...)
	}
	w.requestRestarts(ctx, restarts)
	w.checkServices(ctx, now)
	w.recordSample(ctx, w.cur)
	err := errors.Join(errs...)
	w.polls.Add(1)
	w.mu.Lock()
	w.lastPoll = now
	w.lastPollError = ""
	if err != nil {
		w.lastPollError = err.Error()
	}
	w.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		w.log.Warn().Err(err).Msg("poll incomplete")
	}
}

// checkStreams looks up every Sluice stream, recreates missing ones from the
// topology and tracks the parked count. It returns the streams present.
// The inbound stream is optional: it counts as missing only once seen.
func (w *Watchdog) checkStreams(ctx context.Context, now time.Time, errs *[]error) map[string]bool {
	inbound := w.names.InboundStream()
	present := map[string]bool{}
	var missing []string
	for _, name := range append(w.names.WatchedStreams(), w.names.AdvisoriesStream()) {
		ictx, cancel := context.WithTimeout(ctx, infoRequestTimeout)
		s, err := w.js.Stream(ictx, name)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			w.mu.Lock()
			seen := w.streamSeen[name]
			w.mu.Unlock()
			if name != inbound || seen {
				missing = append(missing, name)
			}
		case err != nil:
			*errs = append(*errs, fmt.Errorf("stream %s: %w", name, err))
		default:
			present[name] = true
			w.mu.Lock()
			w.streamSeen[name] = true
			w.mu.Unlock()
			w.alerts.clear(CondStreamMissing+"/"+name, "stream "+name+" is back")
			if name == w.names.ParkedStream() {
				w.checkParked(now, s.CachedInfo().State.Msgs)
			}
			if name == w.names.EventsStream() {
				w.cur.accepted = s.CachedInfo().State.LastSeq
			}
		}
	}
	if len(missing) == 0 {
		return present
	}
	for _, name := range missing {
		w.alerts.raise(CondStreamMissing+"/"+name, CondStreamMissing, fmt.Sprintf(
			"stream %s is missing (deleted?)%s", name, map[bool]string{true: "; recreating it from the topology",
				false: "; watchdog.recreate is off"}[w.cfg.recreate()]))
	}
	if w.cfg.recreate() {
		err := w.names.Ensure(ctx, w.js)
		if err == nil {
			err = w.names.EnsureWatchdog(ctx, w.js)
		}
		if err == nil && slices.Contains(missing, inbound) {
			err = w.names.EnsureInbound(ctx, w.js)
		}
		w.act(ActionRecreateStream, err, func(e *zerolog.Event) *zerolog.Event { return e.Strs("streams", missing) })
	}
	return present
}

// checkParked raises parked_rising when the lanes parked events since the
// last check (their "parked" alerts: an event parked for the operator, not
// a key held for a retry, whose copies come and go in the same stream), and
// clears it after ParkedRising without one. n is the parked stream's
// message count, held copies included, for the text.
func (w *Watchdog) checkParked(now time.Time, n uint64) {
	w.mu.Lock()
	parks, last := w.parkedNew, w.lastParked
	w.parkedNew = 0
	if !w.parkedKnown {
		w.parkedKnown, w.parkedGrewAt = true, now
	}
	grew := parks > 0
	if grew {
		w.parkedGrewAt = now
	}
	grewAt := w.parkedGrewAt
	w.mu.Unlock()
	key := CondParkedRising + "/" + w.names.ParkedStream()
	switch {
	case grew:
		txt := fmt.Sprintf("%d event(s) parked since the last check, %d message(s) in %s", parks, n, w.names.ParkedStream())
		if last != "" {
			txt += "; " + last
		}
		w.alerts.raise(key, CondParkedRising, txt)
	case now.Sub(grewAt) >= w.cfg.ParkedRising:
		w.alerts.clear(key, fmt.Sprintf("no new parked events for %s (%d parked)", w.cfg.ParkedRising, n))
	}
}

// checkStage polls every lane consumer of stage on stream.
func (w *Watchdog) checkStage(ctx context.Context, now time.Time, stage topology.Stage, stream string) ([]restartReq, error) {
	ictx, cancel := context.WithTimeout(ctx, infoRequestTimeout)
	defer cancel()
	s, err := w.js.Stream(ictx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	infos := map[string]*jetstream.ConsumerInfo{}
	lister := s.ListConsumers(ictx)
	for ci := range lister.Info() {
		infos[ci.Name] = ci
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("list consumers of %s: %w", stream, err)
	}
	var restarts []restartReq
	var paused []int
	var until time.Time
	for p := 0; p < w.names.Partitions(); p++ {
		ls := w.lane(stage, p)
		ci, ok := infos[ls.consumer]
		if !ok {
			// A cluster's consumer list can be partial: the stream leader
			// leaves out consumers whose leaders did not answer in time (the
			// server logs "Did not receive all consumer info results"), e.g.
			// while a node restarts. Only a lookup by name that answers "not
			// found" means the lane consumer is gone.
			if ci = w.lookupConsumer(ctx, s, ls); ci == nil {
				continue
			}
		}
		w.alerts.clear(CondConsumerGone+"/"+ls.consumer, "consumer "+ls.consumer+" is back")
		w.cur.lag[stage] += ci.NumPending + uint64(max(ci.NumAckPending, 0))
		if ci.Paused {
			w.cur.paused++
		}
		if r := w.checkLane(ctx, now, ls, ci); r != nil {
			restarts = append(restarts, *r)
		}
		if ci.Paused {
			paused = append(paused, p)
			if pu := ci.Config.PauseUntil; pu != nil && pu.After(until) {
				until = *pu
			}
		}
	}
	key := CondPaused + "/" + string(stage)
	if len(paused) == 0 {
		w.alerts.clear(key, fmt.Sprintf("%s lanes are no longer paused", stage))
		return restarts, nil
	}
	w.mu.Lock()
	var reasons, parts []string
	for _, p := range paused {
		parts = append(parts, strconv.Itoa(p))
		if r := w.pauseReason[w.names.ConsumerName(stage, p)]; r != "" {
			reasons = append(reasons, r)
		}
	}
	w.mu.Unlock()
	sort.Strings(reasons)
	txt := fmt.Sprintf("%s paused (outlet cut off) on partition(s) %s until %s", stage, strings.Join(parts, ","),
		until.UTC().Format(time.RFC3339))
	if len(reasons) > 0 {
		txt += "; reason: " + reasons[0]
	}
	w.alerts.raise(key, CondPaused, txt)
	return restarts, nil
}

func (w *Watchdog) lane(stage topology.Stage, p int) *laneState {
	name := w.names.ConsumerName(stage, p)
	w.mu.Lock()
	defer w.mu.Unlock()
	ls, ok := w.lanes[name]
	if !ok {
		stream, filter := w.names.StageFilter(stage, p)
		ls = &laneState{stage: stage, p: p, stream: stream, consumer: name, filter: filter}
		w.lanes[name] = ls
	}
	return ls
}

// lookupConsumer asks for one lane consumer absent from the list: its info
// when it exists after all, nil when it does not (then handled as missing)
// or when the server did not say (left for the next poll).
func (w *Watchdog) lookupConsumer(ctx context.Context, s jetstream.Stream, ls *laneState) *jetstream.ConsumerInfo {
	ictx, cancel := context.WithTimeout(ctx, infoRequestTimeout)
	defer cancel()
	c, err := s.Consumer(ictx, ls.consumer)
	switch {
	case err == nil:
		return c.CachedInfo()
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		w.consumerMissing(ctx, ls)
	default:
		w.log.Warn().Err(err).Str("consumer", ls.consumer).Msg("lane consumer not in the list and its lookup failed; checking again next poll")
	}
	return nil
}

// consumerMissing handles a lane consumer that is not on the server. A lane
// never seen is not deployed (or not yet started) and is left alone.
func (w *Watchdog) consumerMissing(ctx context.Context, ls *laneState) {
	if !ls.seen {
		return
	}
	key := CondConsumerGone + "/" + ls.consumer
	if !w.cfg.recreate() {
		w.alerts.raise(key, CondConsumerGone, fmt.Sprintf("lane consumer %s on %s is missing (deleted?); "+
			"watchdog.recreate is off", ls.consumer, ls.stream))
		return
	}
	// Start after the lane's fence (the last sequence a replica applied), not
	// at the start of the stream: the events stream keeps days of history.
	// Create, not update: if the lane's runner recreated it meanwhile (from
	// a fence that may have moved since), that one stands.
	cfg, err := w.names.LaneRecreateConfig(ctx, w.js, ls.stage, ls.p)
	if err == nil {
		_, err = w.js.CreateConsumer(ctx, ls.stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			err = nil
		}
	}
	w.act(ActionRecreateConsumer, err, func(e *zerolog.Event) *zerolog.Event {
		return e.Str("stream", ls.stream).Str("consumer", ls.consumer).Uint64("start_seq", cfg.OptStartSeq)
	})
	if err == nil && cfg.MemoryStorage {
		// An in-memory consumer (a work queue's, topology.LaneConsumerConfig)
		// is lost with every NATS server restart and recreated exactly (the
		// stream holds what is not acked yet): an action, not an alert.
		return
	}
	txt := fmt.Sprintf("lane consumer %s on %s was missing (deleted?); recreated from the topology", ls.consumer, ls.stream)
	if cfg.OptStartSeq > 0 {
		txt += fmt.Sprintf(", starting after the lane's fence (sequence %d)", cfg.OptStartSeq-1)
	}
	if err != nil {
		txt = fmt.Sprintf("lane consumer %s on %s is missing and could not be recreated: %v", ls.consumer, ls.stream, err)
	}
	w.alerts.raise(key, CondConsumerGone, txt)
}

// checkLane evaluates one lane and returns a restart to request, if any.
func (w *Watchdog) checkLane(ctx context.Context, now time.Time, ls *laneState, ci *jetstream.ConsumerInfo) *restartReq {
	first := !ls.seen
	ls.seen = true
	if ci.Paused {
		w.checkPause(ctx, now, ls, ci)
	} else {
		w.alerts.clear(CondPauseOverrun+"/"+ls.consumer, "")
	}
	work := ci.NumPending > 0 || ci.NumAckPending > 0
	floorMoved := ci.AckFloor.Stream != ls.ackFloor
	deliveredMoved := ci.Delivered.Consumer != ls.delivered
	ls.ackFloor, ls.delivered = ci.AckFloor.Stream, ci.Delivered.Consumer
	if first || ci.Paused || !work {
		ls.progressAt, ls.pullerAt, ls.loopPolls = now, now, 0
		w.clearLane(ls)
		return nil
	}
	if floorMoved || deliveredMoved {
		ls.progressAt = now
	}
	switch {
	case floorMoved:
		ls.loopPolls = 0
	case deliveredMoved && ci.NumRedelivered > 0:
		ls.loopPolls++
	}
	puller := ci.NumWaiting > 0 || pinned(ci)
	if puller {
		ls.pullerAt = now
	}
	desc := fmt.Sprintf("%s lane %d (%s): %d pending, %d in flight, ack floor %d", ls.stage, ls.p, ls.consumer,
		ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream)

	if ls.loopPolls >= w.cfg.RedeliveryLoop {
		w.alerts.raise(CondRedelivery+"/"+ls.consumer, CondRedelivery, fmt.Sprintf(
			"%s: head (stream seq %d) redelivered on %d polls without being acked (poison event or missing lookup?)",
			desc, ci.AckFloor.Stream+1, ls.loopPolls))
	} else {
		w.alerts.clear(CondRedelivery+"/"+ls.consumer, desc+": the head moved on")
	}

	var req *restartReq
	if stalled := now.Sub(ls.progressAt); puller && stalled >= w.cfg.StallAfter {
		w.alerts.raise(CondStall+"/"+ls.consumer, CondStall, fmt.Sprintf(
			"%s: no ack or delivery for %s while a client is pulling; restart requested", desc, stalled.Round(time.Second)))
		req = w.maybeRestart(now, ls, CondStall, w.cfg.StallAfter)
	} else {
		w.alerts.clear(CondStall+"/"+ls.consumer, desc+": progressing again")
	}
	if idle := now.Sub(ls.pullerAt); idle >= w.cfg.NoPullerAfter {
		w.alerts.raise(CondNoPuller+"/"+ls.consumer, CondNoPuller, fmt.Sprintf(
			"%s: nobody pulling for %s; restart requested", desc, idle.Round(time.Second)))
		if req == nil {
			req = w.maybeRestart(now, ls, CondNoPuller, w.cfg.NoPullerAfter)
		}
	} else {
		w.alerts.clear(CondNoPuller+"/"+ls.consumer, desc+": a client is pulling again")
	}
	return req
}

func (w *Watchdog) clearLane(ls *laneState) {
	for _, c := range []string{CondRedelivery, CondStall, CondNoPuller} {
		w.alerts.clear(c+"/"+ls.consumer, fmt.Sprintf("%s lane %d (%s) is idle or progressing", ls.stage, ls.p, ls.consumer))
	}
}

func (w *Watchdog) maybeRestart(now time.Time, ls *laneState, cond string, every time.Duration) *restartReq {
	if !ls.restartAt.IsZero() && now.Sub(ls.restartAt) < every {
		return nil
	}
	ls.restartAt = now
	return &restartReq{ls: ls, cond: cond}
}

func pinned(ci *jetstream.ConsumerInfo) bool {
	for _, g := range ci.PriorityGroups {
		if g.PinnedClientID != "" {
			return true
		}
	}
	return false
}

// checkPause resumes a paused lane whose pause outlived its deadline by
// pause_overrun, or whose deadline lies further ahead than max_pause.
func (w *Watchdog) checkPause(ctx context.Context, now time.Time, ls *laneState, ci *jetstream.ConsumerInfo) {
	until := now.Add(ci.PauseRemaining)
	if pu := ci.Config.PauseUntil; pu != nil {
		until = *pu
	}
	var why string
	switch {
	case now.Sub(until) > w.cfg.PauseOverrun:
		why = fmt.Sprintf("still paused %s after its deadline %s", now.Sub(until).Round(time.Second), until.UTC().Format(time.RFC3339))
	case w.cfg.MaxPause > 0 && until.Sub(now) > w.cfg.MaxPause:
		why = fmt.Sprintf("paused until %s, longer than watchdog.max_pause %s", until.UTC().Format(time.RFC3339), w.cfg.MaxPause)
	default:
		return
	}
	_, err := w.js.ResumeConsumer(ctx, ls.stream, ls.consumer)
	w.act(ActionResume, err, func(e *zerolog.Event) *zerolog.Event {
		return e.Str("stream", ls.stream).Str("consumer", ls.consumer).Str("why", why)
	})
	txt := fmt.Sprintf("%s lane %d (%s) %s; resumed", ls.stage, ls.p, ls.consumer, why)
	if err != nil {
		txt = fmt.Sprintf("%s lane %d (%s) %s; resume failed: %v", ls.stage, ls.p, ls.consumer, why, err)
	}
	w.alerts.raise(CondPauseOverrun+"/"+ls.consumer, CondPauseOverrun, txt)
}

// requestRestarts asks the owning services to restart lanes, in parallel.
func (w *Watchdog) requestRestarts(ctx context.Context, reqs []restartReq) {
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, restartTimeout)
			defer cancel()
			err := RequestRestartLane(rctx, w.nc, w.names, r.ls.stage, r.ls.p)
			w.act(ActionRestart, err, func(e *zerolog.Event) *zerolog.Event {
				return e.Str("consumer", r.ls.consumer).Str("condition", r.cond)
			})
			if err != nil {
				w.alerts.event(CondRestartFailed+"/"+r.ls.consumer, CondRestartFailed, fmt.Sprintf(
					"could not restart %s lane %d: %v", r.ls.stage, r.ls.p, err))
			}
		})
	}
	wg.Wait()
}
