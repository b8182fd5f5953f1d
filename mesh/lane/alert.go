package lane

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"sluice.dev/mesh/topology"
)

// Alert is the JSON body of an alert event published on
// <prefix>.alerts.<kind> and kept in the alerts stream for the watchdog.
type Alert struct {
	Kind      string         `json:"kind"`
	Stage     topology.Stage `json:"stage"`
	Partition int            `json:"partition"`
	Consumer  string         `json:"consumer"`
	Subject   string         `json:"subject,omitempty"`
	StreamSeq uint64         `json:"stream_seq,omitempty"`
	Reason    string         `json:"reason,omitempty"`
	Until     time.Time      `json:"until,omitzero"`
	At        time.Time      `json:"at"`
}

func (l *lane) alert(ctx context.Context, kind string, m *Msg, reason string, until time.Time) {
	a := Alert{Kind: kind, Stage: l.g.cfg.Stage, Partition: l.p, Consumer: l.name, Subject: m.Subject,
		StreamSeq: m.StreamSeq, Reason: reason, Until: until, At: time.Now().UTC()}
	b, _ := json.Marshal(a)
	msg := nats.NewMsg(l.g.cfg.Names.AlertSubject(kind))
	msg.Data = b
	if _, err := l.g.js.PublishMsg(ctx, msg); err != nil {
		l.log.Warn().Err(err).Str("alert", kind).Msg("alert publish failed")
	}
}
