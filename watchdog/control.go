package watchdog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/topology"
)

// ActionRestartLane asks a service to drop and recreate one lane's consume
// loop.
const ActionRestartLane = "restart_lane"

// maxControlRequest bounds a control request body.
const maxControlRequest = 4 << 10

// ControlRequest is the JSON body of a request on
// <prefix>.control.<service>, e.g.
// {"action":"restart_lane","stage":"dispatcher","partition":3}.
type ControlRequest struct {
	Action    string         `json:"action"`
	Stage     topology.Stage `json:"stage"`
	Partition int            `json:"partition"`
}

// ControlReply is the JSON reply: {"ok":true} or {"ok":false,"error":"…"}.
type ControlReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// DecodeControlRequest strictly decodes a control request (unknown fields,
// trailing data, a missing action, a negative partition and bodies over 4
// KiB are refused); its errors wrap ErrBadControlRequest.
func DecodeControlRequest(b []byte) (ControlRequest, error) {
	var r ControlRequest
	if len(b) > maxControlRequest {
		return r, fmt.Errorf("%w: body over %d bytes", ErrBadControlRequest, maxControlRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return ControlRequest{}, fmt.Errorf("%w: %v", ErrBadControlRequest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ControlRequest{}, fmt.Errorf("%w: trailing data", ErrBadControlRequest)
	}
	switch {
	case r.Action == "":
		return ControlRequest{}, fmt.Errorf("%w: action is required", ErrBadControlRequest)
	case r.Partition < 0:
		return ControlRequest{}, fmt.Errorf("%w: partition must be >= 0", ErrBadControlRequest)
	}
	return r, nil
}

// ServeControl answers control requests for service (a stage name:
// "enricher", "dispatcher", "inbound") on names.ControlSubject(service).
// For restart_lane it checks stage and partition and calls restart (wire it
// to (*lane.Group).Restart). When restart returns an error wrapping
// ErrNotOwner no reply is sent, so that with several instances the one
// running the partition answers. Every request is logged. Unsubscribe the
// returned subscription (or Drain) when the service stops.
func ServeControl(nc *nats.Conn, names topology.Names, service string, restart func(partition int) error,
	log zerolog.Logger) (*nats.Subscription, error) {
	if nc == nil || restart == nil {
		return nil, errors.New("watchdog: ServeControl needs a connection and a restart function")
	}
	log = log.With().Str("control", service).Logger()
	return nc.Subscribe(names.ControlSubject(service), func(m *nats.Msg) {
		reply := func(err error) {
			if m.Reply == "" {
				return
			}
			r := ControlReply{OK: err == nil}
			if err != nil {
				r.Error = err.Error()
			}
			b, _ := json.Marshal(r)
			_ = m.Respond(b)
		}
		req, err := DecodeControlRequest(m.Data)
		if err != nil {
			log.Warn().Err(err).Msg("control request refused")
			reply(err)
			return
		}
		switch {
		case req.Action != ActionRestartLane:
			err = fmt.Errorf("%w: %q", ErrUnknownAction, req.Action)
		case string(req.Stage) != service:
			err = fmt.Errorf("%w: stage %q is not served by %s", ErrBadControlRequest, req.Stage, service)
		case req.Partition >= names.Partitions():
			err = fmt.Errorf("%w: partition %d out of range 0..%d", ErrBadControlRequest, req.Partition, names.Partitions()-1)
		default:
			err = restart(req.Partition)
			if errors.Is(err, ErrNotOwner) {
				log.Debug().Int("partition", req.Partition).Msg("restart request for a partition run elsewhere")
				return
			}
		}
		ev := log.Info()
		if err != nil {
			ev = log.Warn().Err(err)
		}
		ev.Str("action", req.Action).Str("stage", string(req.Stage)).Int("partition", req.Partition).Msg("control request")
		reply(err)
	})
}

// RequestRestartLane asks the service owning stage's lanes to restart
// partition p and waits for its reply (ctx bounds the wait). It returns
// ErrNoOwner when nobody answers and ErrControlFailed with the service's
// message when the service refused.
func RequestRestartLane(ctx context.Context, nc *nats.Conn, names topology.Names, stage topology.Stage, p int) error {
	b, _ := json.Marshal(ControlRequest{Action: ActionRestartLane, Stage: stage, Partition: p})
	m, err := nc.RequestWithContext(ctx, names.ControlSubject(string(stage)), b)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("%w: %s partition %d: %v", ErrNoOwner, stage, p, err)
		}
		return err
	}
	var r ControlReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("%w: unreadable reply: %v", ErrControlFailed, err)
	}
	if !r.OK {
		return fmt.Errorf("%w: %s", ErrControlFailed, r.Error)
	}
	return nil
}
