package watchdog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"sluice.dev/mesh/redact"
	"sluice.dev/mesh/topology"
	"sluice.dev/mesh/version"
)

// ServiceName is the micro service name ($SRV.PING|INFO|STATS.sluice-watchdog).
const ServiceName = "sluice-watchdog"

// Version is the micro service version: Sluice's one version (mesh/version).
var Version = version.String()

// durableName is the watchdog's durable consumer on the alerts and
// advisories streams.
const durableName = "watchdog"

// watchdogAlertKind is the alert kind the watchdog publishes its own
// alerts under (<prefix>.alerts.watchdog).
const watchdogAlertKind = "watchdog"

// Action names, as counted in Stats.Actions ("<action>_failed" on error).
const (
	ActionResume           = "resume_consumer"
	ActionRestart          = "restart_lane"
	ActionRestartService   = "restart_service"
	ActionRecreateStream   = "recreate_stream"
	ActionRecreateConsumer = "recreate_consumer"
)

// Deps are the watchdog's collaborators.
type Deps struct {
	// NC carries control requests, PINGs and the micro service. Required.
	NC *nats.Conn
	// JS reads consumer and stream state and acts on it. Required.
	JS jetstream.JetStream
	// Names is the topology being watched.
	Names topology.Names
	// Logger receives every action and alert. Webhook URLs are never logged.
	Logger zerolog.Logger
	// HTTPClient posts alerts. Optional: a client with alerts.timeout.
	HTTPClient *http.Client
	// Now is the clock. Optional: time.Now (tests move it).
	Now func() time.Time
	// RestartService, when set (--target all), is called for a service that
	// stopped answering PING (at most once per service_silent_after); see
	// Supervisors.RestartService.
	RestartService func(ctx context.Context, service string) error
	// Sinks are extra alert sinks (tests, other chat tools).
	Sinks []Sink
	// Redactor hides sensitive values in the texts the status page shows
	// (park reasons, alert texts, lane notes). Optional: mesh/redact's
	// built-in rules; pass redact.New(ledger.sensitive_fields...).
	Redactor *redact.Redactor
}

// Watchdog watches lanes, streams, advisories and services, acts on what
// it finds and alerts.
type Watchdog struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	names  topology.Names
	log    zerolog.Logger
	now    func() time.Time
	deps   Deps
	alerts *alerter
	page   *Page

	mu            sync.Mutex
	running       bool
	stopPoll      context.CancelFunc
	stopSend      context.CancelFunc
	pollWG        sync.WaitGroup
	sendWG        sync.WaitGroup
	sinks         []Sink
	consumes      []jetstream.ConsumeContext
	subs          []*nats.Subscription
	svc           micro.Service
	lanes         map[string]*laneState
	streamSeen    map[string]bool
	svcSeen       map[string]time.Time
	svcRestarted  map[string]time.Time
	parkedGrewAt  time.Time
	parkedKnown   bool
	parkedNew     uint64 // lane "parked" alerts since the last check
	pauseReason   map[string]string
	lastParked    string
	actions       map[string]uint64
	advisories    map[string]uint64
	lastPoll      time.Time
	lastPollError string
	// cur is the sample the running poll fills in (poll goroutine only);
	// hist keeps the last HistoryWindow of them for the page's chart.
	cur  *sample
	hist history

	polls         atomic.Uint64
	badAdvisories atomic.Uint64
}

// New validates cfg (after defaults) and deps and returns a stopped Watchdog.
func New(cfg Config, deps Deps) (*Watchdog, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.JS == nil {
		return nil, errors.New("watchdog: Deps.NC and Deps.JS are required")
	}
	if err := deps.Names.Config().Validate(); err != nil {
		return nil, fmt.Errorf("watchdog: Deps.Names: %w", err)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	client := deps.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: cfg.Alerts.Timeout}
	}
	log := deps.Logger.With().Str("service", "watchdog").Logger()
	sinks := []Sink{LogSink{Log: log}, StreamSink{JS: deps.JS, Subject: deps.Names.AlertSubject(watchdogAlertKind)}}
	if cfg.Slack.WebhookURL != "" {
		sinks = append(sinks, NewSlackSink(cfg.Slack.WebhookURL, client))
	}
	if cfg.Webhook.URL != "" {
		sinks = append(sinks, NewWebhookSink(cfg.Webhook.URL, client))
	}
	sinks = append(sinks, deps.Sinks...)
	w := &Watchdog{
		cfg: cfg, nc: deps.NC, js: deps.JS, names: deps.Names, log: log, now: deps.Now, deps: deps,
		sinks: sinks, alerts: newAlerter(cfg.Alerts, deps.Now, sinks, log),
	}
	w.page = newPage(w, cfg.Page)
	return w, nil
}

// Start ensures the topology and the advisories stream, starts consuming
// advisories and lane alerts, registers the micro service and starts
// polling. On error everything started is stopped again.
func (w *Watchdog) Start(ctx context.Context) (err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		return ErrAlreadyStarted
	}
	if err := w.names.Ensure(ctx, w.js); err != nil {
		return err
	}
	if err := w.names.EnsureWatchdog(ctx, w.js); err != nil {
		return err
	}
	w.resetState()
	if w.alerts.isClosed() {
		w.alerts = newAlerter(w.cfg.Alerts, w.now, w.sinks, w.log)
	}
	defer func() {
		if err != nil {
			w.stopSubscriptions()
		}
	}()
	cc, err := w.consumeDurable(ctx, w.names.AdvisoriesStream(), "", func(m jetstream.Msg) {
		w.onAdvisory(m.Data())
		_ = m.Ack()
	})
	if err != nil {
		return err
	}
	w.consumes = append(w.consumes, cc)
	cc, err = w.consumeDurable(ctx, w.names.AlertsStream(), w.names.AlertSubject(">"), w.onLaneAlert)
	if err != nil {
		return err
	}
	w.consumes = append(w.consumes, cc)
	sub, err := w.subscribeOutOfStorage()
	if err != nil {
		return err
	}
	w.subs = append(w.subs, sub)
	if w.svc, err = w.addMicro(); err != nil {
		return fmt.Errorf("watchdog: micro service: %w", err)
	}
	if err := w.page.start(); err != nil {
		return err
	}
	pollCtx, stopPoll := context.WithCancel(context.WithoutCancel(ctx))
	sendCtx, stopSend := context.WithCancel(context.WithoutCancel(ctx))
	w.stopPoll, w.stopSend, w.running = stopPoll, stopSend, true
	al := w.alerts
	w.pollWG.Add(1)
	w.sendWG.Add(1)
	go func() { defer w.sendWG.Done(); al.run(sendCtx) }()
	go func() { defer w.pollWG.Done(); w.loop(pollCtx) }()
	w.pollWG.Add(1)
	go func() { defer w.pollWG.Done(); w.auditLoop(pollCtx) }()
	w.log.Info().Dur("poll_interval", w.cfg.PollInterval).Strs("services", w.cfg.Services).
		Bool("slack", w.cfg.Slack.WebhookURL != "").Bool("webhook", w.cfg.Webhook.URL != "").Msg("watchdog started")
	return nil
}

func (w *Watchdog) resetState() {
	w.lanes = map[string]*laneState{}
	w.streamSeen = map[string]bool{}
	w.svcSeen = map[string]time.Time{}
	w.svcRestarted = map[string]time.Time{}
	w.pauseReason = map[string]string{}
	w.actions = map[string]uint64{}
	w.advisories = map[string]uint64{}
	w.parkedKnown = false
}

func (w *Watchdog) stopSubscriptions() {
	for _, c := range w.consumes {
		c.Stop()
	}
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
	w.consumes, w.subs = nil, nil
	if w.svc != nil {
		_ = w.svc.Stop()
		w.svc = nil
	}
}

// Stop stops polling and consuming, deregisters the micro service and sends
// the alerts still queued (ctx bounds that wait).
func (w *Watchdog) Stop(ctx context.Context) error {
	w.mu.Lock()
	if !w.running {
		w.mu.Unlock()
		return ErrNotStarted
	}
	w.running = false
	w.stopSubscriptions()
	stopPoll, stopSend, al := w.stopPoll, w.stopSend, w.alerts
	w.mu.Unlock()

	pageErr := w.page.stop(ctx)
	stopPoll()
	w.pollWG.Wait()
	al.close() // the sender drains the queue, then returns
	done := make(chan struct{})
	go func() { w.sendWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	stopSend()
	<-done
	w.log.Info().Msg("watchdog stopped")
	return errors.Join(err, pageErr)
}

func (w *Watchdog) loop(ctx context.Context) {
	t := time.NewTicker(w.cfg.PollInterval)
	defer t.Stop()
	for {
		w.poll(ctx)
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// act logs and counts one action.
func (w *Watchdog) act(action string, err error, ev func(*zerolog.Event) *zerolog.Event) {
	name := action
	e := w.log.Warn().Str("action", action)
	if err != nil {
		name += "_failed"
		e = w.log.Error().Err(err).Str("action", action)
	}
	w.mu.Lock()
	w.actions[name]++
	w.mu.Unlock()
	ev(e).Msg("watchdog action")
}

func (w *Watchdog) count(c *atomic.Uint64) { c.Add(1) }

// Stats is the watchdog's progress, served as the micro STATS data.
type Stats struct {
	Polls           uint64            `json:"polls"`
	LastPoll        time.Time         `json:"last_poll,omitzero"`
	LastPollError   string            `json:"last_poll_error,omitempty"`
	ConditionsOpen  int               `json:"conditions_open"`
	Actions         map[string]uint64 `json:"actions"`
	AlertsRaised    uint64            `json:"alerts_raised"`
	AlertsDelivered uint64            `json:"alerts_delivered"`
	AlertsFailed    uint64            `json:"alerts_failed"`
	AlertsDropped   uint64            `json:"alerts_dropped"`
	Advisories      map[string]uint64 `json:"advisories"`
	BadMessages     uint64            `json:"bad_messages"`
}

// Status is the reply of the status endpoint: stats and open conditions.
type Status struct {
	Stats      Stats       `json:"stats"`
	Conditions []Condition `json:"conditions"`
}

// Stats returns a snapshot of the counters.
func (w *Watchdog) Stats() Stats {
	w.mu.Lock()
	st := Stats{
		Polls: w.polls.Load(), LastPoll: w.lastPoll, LastPollError: w.lastPollError,
		Actions: maps.Clone(w.actions), Advisories: maps.Clone(w.advisories),
	}
	w.mu.Unlock()
	if st.Actions == nil {
		st.Actions = map[string]uint64{}
	}
	if st.Advisories == nil {
		st.Advisories = map[string]uint64{}
	}
	st.ConditionsOpen = len(w.alerts.conditions())
	st.AlertsRaised = w.alerts.raised.Load()
	st.AlertsDelivered = w.alerts.sent.Load()
	st.AlertsFailed = w.alerts.failed.Load()
	st.AlertsDropped = w.alerts.dropped.Load()
	st.BadMessages = w.badAdvisories.Load()
	return st
}

// Status returns the stats and the open conditions.
func (w *Watchdog) Status() Status {
	return Status{Stats: w.Stats(), Conditions: w.alerts.conditions()}
}

// StatusSubject is the request subject of the status endpoint:
// <prefix>.watchdog.status.
func (w *Watchdog) StatusSubject() string {
	return w.names.Config().Prefix + ".watchdog.status"
}

func (w *Watchdog) addMicro() (micro.Service, error) {
	svc, err := micro.AddService(w.nc, micro.Config{
		Name:         ServiceName,
		Version:      Version,
		Description:  "Sluice watchdog: detects stalled lanes, resumes and restarts them, alerts",
		StatsHandler: func(*micro.Endpoint) any { return w.Stats() },
	})
	if err != nil {
		return nil, err
	}
	err = svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) {
		_ = r.RespondJSON(w.Status())
	}), micro.WithEndpointSubject(w.StatusSubject()))
	if err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}
