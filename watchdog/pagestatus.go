package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// Lane states shown on the page.
const (
	LaneOK      = "ok"
	LaneLagging = "lagging"
	LanePaused  = "paused"
	LaneStalled = "stalled"
	LaneError   = "error"
)

// pageAlerts is how many recent alerts the page shows.
const pageAlerts = 50

// PageStatus is the JSON of GET /api/status.
type PageStatus struct {
	At         time.Time        `json:"at"`
	Partitions int              `json:"partitions"`
	Stages     []topology.Stage `json:"stages"`
	Lanes      []PageLane       `json:"lanes"`
	Conditions []Condition      `json:"conditions"`
	Alerts     []PageAlert      `json:"alerts"`
	Parked     []lane.ParkedKey `json:"parked"`
	// Audit is the last `sluice audit` summary (nil: none ran yet or the
	// ledger is off); Oldest the oldest undelivered events now.
	Audit  *ledger.Summary `json:"audit,omitempty"`
	Oldest *ledger.Oldest  `json:"oldest,omitempty"`
	// Control is true when a token is configured (the buttons work).
	Control bool `json:"control"`
	// Errors lists what could not be read (the rest is still shown).
	Errors []string `json:"errors,omitempty"`
}

// PageLane is one lane of the grid.
type PageLane struct {
	Stage       topology.Stage `json:"stage"`
	Partition   int            `json:"partition"`
	Consumer    string         `json:"consumer"`
	State       string         `json:"state"`
	Lag         uint64         `json:"lag"`
	Pending     uint64         `json:"pending"`
	AckPending  int            `json:"ack_pending"`
	AckFloor    uint64         `json:"ack_floor_stream_seq"`
	Redelivered int            `json:"redelivered"`
	PausedUntil *time.Time     `json:"paused_until,omitempty"`
	LastActive  *time.Time     `json:"last_active,omitempty"`
	Note        string         `json:"note,omitempty"`
}

// PageAlert is one message of the alerts stream.
type PageAlert struct {
	Seq     uint64    `json:"seq"`
	Subject string    `json:"subject"`
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Text    string    `json:"text"`
}

// stalledConds are the open conditions that colour a lane stalled.
var stalledConds = []string{CondStall, CondNoPuller, CondRedelivery, CondPauseOverrun, CondConsumerGone, CondRestartFailed}

// collect reads every lane, the open conditions, the last alerts and the
// parked keys.
func (p *Page) collect(ctx context.Context) PageStatus {
	st := PageStatus{At: p.w.now().UTC(), Partitions: p.w.names.Partitions(), Control: p.cfg.Token != "",
		Conditions: p.w.alerts.conditions(), Lanes: []PageLane{}, Alerts: []PageAlert{}, Parked: []lane.ParkedKey{}}
	open := map[string]string{}
	for _, c := range st.Conditions {
		kind, consumer, ok := strings.Cut(c.Key, "/")
		if ok && containsStr(stalledConds, kind) {
			open[consumer] = c.Text
		}
	}
	fail := func(err error) { st.Errors = append(st.Errors, err.Error()) }
	for _, stage := range laneStages {
		stream, _ := p.w.names.StageFilter(stage, 0)
		if stream == "" {
			continue
		}
		if _, err := p.w.js.Stream(ctx, stream); errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		} else if err != nil {
			fail(fmt.Errorf("stream %s: %w", stream, err))
			continue
		}
		st.Stages = append(st.Stages, stage)
		for part := 0; part < st.Partitions; part++ {
			name := p.w.names.ConsumerName(stage, part)
			c, err := p.w.js.Consumer(ctx, stream, name)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue
			}
			l := PageLane{Stage: stage, Partition: part, Consumer: name}
			if err != nil {
				l.State, l.Note = LaneError, err.Error()
				st.Lanes = append(st.Lanes, l)
				continue
			}
			p.fillLane(&l, c.CachedInfo(), open[name])
			st.Lanes = append(st.Lanes, l)
		}
	}
	var err error
	if st.Alerts, err = p.recentAlerts(ctx); err != nil {
		fail(err)
	}
	st.Audit, st.Oldest = p.delivery(ctx, fail)
	if admin, err := p.admin(ctx); err != nil {
		fail(err)
	} else {
		pk, err := admin.List(ctx)
		if err != nil {
			fail(fmt.Errorf("parked keys: %w", err))
		} else if pk != nil {
			st.Parked = pk
		}
	}
	return st
}

func (p *Page) fillLane(l *PageLane, ci *jetstream.ConsumerInfo, cond string) {
	l.Pending, l.AckPending, l.AckFloor, l.Redelivered = ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, ci.NumRedelivered
	l.Lag = ci.NumPending + uint64(max(ci.NumAckPending, 0))
	if ci.AckFloor.Last != nil {
		t := ci.AckFloor.Last.UTC()
		l.LastActive = &t
	}
	switch {
	case cond != "":
		l.State, l.Note = LaneStalled, cond
	case ci.Paused && ci.Config.PauseUntil != nil:
		u := ci.Config.PauseUntil.UTC()
		l.PausedUntil = &u
		l.State = LanePaused
		p.w.mu.Lock()
		l.Note = p.w.pauseReason[l.Consumer]
		p.w.mu.Unlock()
	case l.Lag >= p.cfg.LaggingPending:
		l.State = LaneLagging
	default:
		l.State = LaneOK
	}
}

// recentAlerts reads the last pageAlerts messages of the alerts stream,
// newest first.
func (p *Page) recentAlerts(ctx context.Context) ([]PageAlert, error) {
	out := []PageAlert{}
	s, err := p.w.js.Stream(ctx, p.w.names.AlertsStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return out, nil
	} else if err != nil {
		return out, fmt.Errorf("alerts: %w", err)
	}
	state := s.CachedInfo().State
	for seq := state.LastSeq; seq >= state.FirstSeq && seq > 0 && len(out) < pageAlerts; seq-- {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		} else if err != nil {
			return out, fmt.Errorf("alerts: %w", err)
		}
		out = append(out, alertOf(m))
	}
	return out, nil
}

// alertOf renders a watchdog Alert or a lane.Alert as one line.
func alertOf(m *jetstream.RawStreamMsg) PageAlert {
	a := PageAlert{Seq: m.Sequence, Subject: m.Subject, At: m.Time.UTC()}
	var wa Alert
	if json.Unmarshal(m.Data, &wa) == nil && wa.Text != "" {
		a.Kind, a.Text = wa.Condition+" "+wa.State, wa.Text
		return a
	}
	var la lane.Alert
	if json.Unmarshal(m.Data, &la) == nil && la.Kind != "" {
		a.Kind = la.Kind
		a.Text = fmt.Sprintf("%s %s", la.Consumer, la.Reason)
		return a
	}
	a.Kind, a.Text = "unknown", truncate(string(m.Data), 200)
	return a
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
