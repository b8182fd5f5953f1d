package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/spf13/cobra"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// discoverWait is how long status collects micro PING and STATS replies.
const discoverWait = 500 * time.Millisecond

// laneStages are the stages whose lanes status lists.
var laneStages = topology.Stages()

// Status is what `sluice status` reports, all read from JetStream and the
// services' micro endpoints (not from logs).
type Status struct {
	// Warnings are things the operator should know before reading the
	// tables (e.g. the config's partition count is not the streams').
	Warnings []string        `json:"warnings,omitempty"`
	Lanes    []LaneStatus    `json:"lanes"`
	Parked   []ParkedStatus  `json:"parked"`
	Services []ServiceStatus `json:"services"`
	CRM      []CRMStatus     `json:"crm"`
}

// LaneStatus is one lane's consumer state.
type LaneStatus struct {
	Stage         topology.Stage `json:"stage"`
	Partition     int            `json:"partition"`
	Consumer      string         `json:"consumer"`
	Pending       uint64         `json:"pending"`
	AckPending    int            `json:"ack_pending"`
	AckFloorSeq   uint64         `json:"ack_floor_stream_seq"`
	Redelivered   int            `json:"redelivered"`
	PausedUntil   *time.Time     `json:"paused_until,omitempty"`
	LastActive    *time.Time     `json:"last_active,omitempty"`
	ConsumerError string         `json:"error,omitempty"`
	// LastError is the lane's last handler error as its service reports it
	// in its micro STATS (empty when none, or the service is not running).
	LastError string `json:"last_error,omitempty"`
	// LastErrorAt is when it happened; RecoveredAt the lane's first ack
	// after it (the lane works again), if any.
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	RecoveredAt *time.Time `json:"recovered_at,omitempty"`
}

// ParkedStatus counts a stage's parked events and distinct keys.
type ParkedStatus struct {
	Stage  string `json:"stage"`
	Events uint64 `json:"events"`
	Keys   int    `json:"keys"`
	// HeldKeys counts the stage's keys held for a retry (step-aside): the
	// lanes replay their events by themselves. Events of held keys are in
	// Events too; the other keys wait for an operator's replay or discard.
	HeldKeys int `json:"held_keys"`
}

// ServiceStatus is one micro service instance that answered PING.
type ServiceStatus struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	ID      string `json:"id"`
}

// CRMStatus is one dispatcher instance's view of the CRM.
type CRMStatus struct {
	ID         string            `json:"id"`
	Delivered  uint64            `json:"delivered"`
	Statuses   map[string]uint64 `json:"statuses"`
	LatencyP50 time.Duration     `json:"latency_p50_ns"`
	LatencyP99 time.Duration     `json:"latency_p99_ns"`
	// What the dispatcher did about the CRM's ways (dispatcher.Stats):
	// records adopted after a lost answer (found by crm.find or named by a
	// conflict), requests answered to a paused lane's probe and not sent
	// again, OAuth2 tokens fetched and 401s, 429s and the limiter's rate.
	Adopted      uint64  `json:"adopted,omitempty"`
	ProbeAnswers uint64  `json:"probe_answers,omitempty"`
	TokenFetches uint64  `json:"token_fetches,omitempty"`
	Unauthorized uint64  `json:"unauthorized,omitempty"`
	Throttled    uint64  `json:"throttled,omitempty"`
	Rate         float64 `json:"rate,omitempty"`
}

// notes lists c's non-zero counters of the CRM's ways, "-" when none.
func (c CRMStatus) notes() string {
	var out []string
	for _, n := range []struct {
		name string
		v    uint64
	}{{"adopted", c.Adopted}, {"probe_answers", c.ProbeAnswers}, {"token_fetches", c.TokenFetches},
		{"401s", c.Unauthorized}, {"429s", c.Throttled}} {
		if n.v > 0 {
			out = append(out, fmt.Sprintf("%s=%d", n.name, n.v))
		}
	}
	if c.Rate > 0 {
		out = append(out, fmt.Sprintf("rate=%.0f/s", c.Rate))
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " ")
}

// connectCLI connects an operator command to nats.url or, when empty, to
// the embedded server a `sluice run` on this config listens on, with the
// credentials, TLS and inbox prefix of nats.* (natsOptions). What the
// server refuses later (a permissions violation) is printed on stderr.
func connectCLI(c Config, name string) (*nats.Conn, jetstream.JetStream, error) {
	url := c.NATS.URL
	if url == "" {
		url = "nats://" + c.NATS.Embedded.Listen
	}
	opts, err := natsOptions(c.NATS, name, func(err error) { fmt.Fprintf(os.Stderr, "sluice %s: NATS: %v\n", name, err) })
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, append(opts, nats.Timeout(3*time.Second))...)
	if err != nil {
		return nil, nil, connectError(url, err, "is `sluice run` up?")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// collectStatus reads every lane, the parked stream, the live services and
// the dispatchers' CRM counters.
func collectStatus(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) (Status, error) {
	var st Status
	for _, stage := range laneStages {
		stream, _ := names.StageFilter(stage, 0)
		s, err := js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		} else if err != nil {
			return st, fmt.Errorf("stream %s: %w", stream, err)
		}
		if n, ok := topology.TransformPartitions(s.CachedInfo().Config); ok && n != names.Partitions() {
			st.Warnings = append(st.Warnings, fmt.Sprintf("stream %s has %d partitions, this config says %d "+
				"(topology.partitions): the lanes below are the config's; see `sluice partitions status`", stream, n, names.Partitions()))
		}
		for p := 0; p < names.Partitions(); p++ {
			name := names.ConsumerName(stage, p)
			l := LaneStatus{Stage: stage, Partition: p, Consumer: name}
			cons, err := js.Consumer(ctx, stream, name)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue
			} else if err != nil {
				l.ConsumerError = err.Error()
				st.Lanes = append(st.Lanes, l)
				continue
			}
			ci := cons.CachedInfo()
			l.Pending, l.AckPending, l.AckFloorSeq, l.Redelivered = ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, ci.NumRedelivered
			if ci.Paused && ci.Config.PauseUntil != nil {
				u := ci.Config.PauseUntil.UTC()
				l.PausedUntil = &u
			}
			if ci.AckFloor.Last != nil {
				t := ci.AckFloor.Last.UTC()
				l.LastActive = &t
			}
			st.Lanes = append(st.Lanes, l)
		}
	}
	parked, err := parkedCounts(ctx, js, names)
	if err != nil {
		return st, err
	}
	st.Parked = parked
	st.Services, st.CRM = discover(nc)
	errs := laneErrors(nc)
	for i := range st.Lanes {
		l, ok := errs[st.Lanes[i].Consumer]
		if !ok {
			continue
		}
		st.Lanes[i].LastError = l.LastError
		if !l.LastErrorAt.IsZero() {
			at := l.LastErrorAt
			st.Lanes[i].LastErrorAt = &at
			if l.LastAck.After(at) {
				rec := l.LastAck
				st.Lanes[i].RecoveredAt = &rec
			}
		}
	}
	return st, nil
}

// laneErrors collects each lane's stats with a last error from the STATS
// of the services that run lanes (their stats carry "lanes": [lane.Stats]).
func laneErrors(nc *nats.Conn) map[string]lane.Stats {
	out := map[string]lane.Stats{}
	for _, svc := range []string{"sluice-enricher", dispatcher.ServiceName, "sluice-inbound"} {
		subj, _ := micro.ControlSubject(micro.StatsVerb, svc, "")
		for _, b := range gather(nc, subj) {
			var s micro.Stats
			if json.Unmarshal(b, &s) != nil {
				continue
			}
			for _, ep := range s.Endpoints {
				var d struct {
					Lanes []lane.Stats `json:"lanes"`
				}
				if json.Unmarshal(ep.Data, &d) != nil {
					continue
				}
				for _, l := range d.Lanes {
					if l.LastError != "" {
						out[l.Consumer] = l
					}
				}
			}
		}
	}
	return out
}

// parkedCounts counts parked events and keys per stage from the parked
// stream's subjects (<prefix>.parked.<stage>.<type>.<key>).
func parkedCounts(ctx context.Context, js jetstream.JetStream, names topology.Names) ([]ParkedStatus, error) {
	s, err := js.Stream(ctx, names.ParkedStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("stream %s: %w", names.ParkedStream(), err)
	}
	prefix := names.Config().Prefix + ".parked."
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", names.ParkedStream(), err)
	}
	by := map[string]*ParkedStatus{}
	for subj, n := range info.State.Subjects {
		stage, _, _ := strings.Cut(strings.TrimPrefix(subj, prefix), ".")
		p := by[stage]
		if p == nil {
			p = &ParkedStatus{Stage: stage}
			by[stage] = p
		}
		p.Events += n
		p.Keys++ // one subject per type and key
	}
	if err := countHeld(ctx, js, names, by); err != nil {
		return nil, err
	}
	out := make([]ParkedStatus, 0, len(by))
	for _, p := range by {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stage < out[j].Stage })
	return out, nil
}

// countHeld adds each stage's held keys (parked-keys entries with held
// set) to by, reading the bucket once through a watch of its values.
func countHeld(ctx context.Context, js jetstream.JetStream, names topology.Names, by map[string]*ParkedStatus) error {
	kv, err := js.KeyValue(ctx, names.ParkedKeysBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("bucket %s: %w", names.ParkedKeysBucket(), err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	for retries := 0; notReadyAgain(err, &retries); {
		w, err = kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", names.ParkedKeysBucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				return nil // every current value was read
			}
			var pk lane.ParkedKey
			if json.Unmarshal(e.Value(), &pk) != nil || !pk.Held {
				continue
			}
			p := by[string(pk.Stage)]
			if p == nil {
				p = &ParkedStatus{Stage: string(pk.Stage)}
				by[string(pk.Stage)] = p
			}
			p.HeldKeys++
		}
	}
}

// gather publishes a request to subject and collects the replies for
// discoverWait.
func gather(nc *nats.Conn, subject string) [][]byte {
	inbox := nc.NewInbox() // nats.inbox_prefix: an operator may subscribe to its own inbox only
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil
	}
	var out [][]byte
	deadline := time.Now().Add(discoverWait)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return out
		}
		out = append(out, m.Data)
	}
}

// discover lists the micro services that answer PING and the dispatchers'
// CRM counters from their STATS.
func discover(nc *nats.Conn) ([]ServiceStatus, []CRMStatus) {
	var svcs []ServiceStatus
	ping, _ := micro.ControlSubject(micro.PingVerb, "", "")
	for _, b := range gather(nc, ping) {
		var p micro.Ping
		if json.Unmarshal(b, &p) == nil && p.Name != "" {
			svcs = append(svcs, ServiceStatus{Name: p.Name, Version: p.Version, ID: p.ID})
		}
	}
	sort.Slice(svcs, func(i, j int) bool {
		return svcs[i].Name+svcs[i].ID < svcs[j].Name+svcs[j].ID
	})
	var crm []CRMStatus
	stats, _ := micro.ControlSubject(micro.StatsVerb, dispatcher.ServiceName, "")
	for _, b := range gather(nc, stats) {
		var s micro.Stats
		if json.Unmarshal(b, &s) != nil || len(s.Endpoints) == 0 {
			continue
		}
		var d dispatcher.Stats
		if json.Unmarshal(s.Endpoints[0].Data, &d) != nil {
			continue
		}
		crm = append(crm, CRMStatus{ID: s.ID, Delivered: d.Delivered, Statuses: d.CRMStatuses,
			LatencyP50: d.Latency.P50, LatencyP99: d.Latency.P99,
			Adopted: d.Adopted, ProbeAnswers: d.ProbeAnswers, TokenFetches: d.TokenFetches,
			Unauthorized: d.Unauthorized, Throttled: d.Throttled, Rate: d.Rate})
	}
	return svcs, crm
}

// writeJSON prints v as indented JSON: the --json form of status,
// partitions status, audit and trace.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeStatus prints st as tables.
func writeStatus(w io.Writer, st Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, warn := range st.Warnings {
		fmt.Fprintln(tw, "WARNING: "+warn)
	}
	fmt.Fprintln(tw, "STAGE\tPARTITION\tCONSUMER\tPENDING\tACK PENDING\tACK FLOOR\tREDELIVERED\tPAUSED UNTIL\tLAST ERROR")
	for _, l := range st.Lanes {
		paused := "-"
		if l.PausedUntil != nil {
			paused = clock(*l.PausedUntil)
		}
		if l.ConsumerError != "" {
			paused = "error: " + l.ConsumerError
		}
		lastErr := lastErrorCell(l)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", l.Stage, l.Partition, l.Consumer,
			l.Pending, l.AckPending, l.AckFloorSeq, l.Redelivered, paused, lastErr)
	}
	if len(st.Lanes) == 0 {
		fmt.Fprintln(tw, "(no lanes: is the topology created?)")
	}
	fmt.Fprintln(tw, "\nPARKED STAGE\tEVENTS\tKEYS\tHELD KEYS (RETRYING BY THEMSELVES)")
	for _, p := range st.Parked {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", p.Stage, p.Events, p.Keys, p.HeldKeys)
	}
	if len(st.Parked) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	fmt.Fprintln(tw, "\nSERVICE\tVERSION\tID")
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Version, s.ID)
	}
	if len(st.Services) == 0 {
		fmt.Fprintln(tw, "(no service answered PING)")
	}
	fmt.Fprintln(tw, "\nCRM (dispatcher)\tDELIVERED\tCRM ANSWERS\tPRODUCE→CRM P50\tPRODUCE→CRM P99\tNOTES")
	for _, c := range st.CRM {
		codes := make([]string, 0, len(c.Statuses))
		for k, v := range c.Statuses {
			codes = append(codes, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(codes)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", c.ID, c.Delivered, strings.Join(codes, " "),
			c.LatencyP50.Round(time.Millisecond), c.LatencyP99.Round(time.Millisecond), c.notes())
	}
	if len(st.CRM) == 0 {
		fmt.Fprintln(tw, "(no dispatcher answered STATS)")
	} else {
		fmt.Fprintln(tw, "(PRODUCE→CRM: from Sluice accepting the event to the CRM's 2xx, over the last 1024 deliveries; not the CRM's own answer time)")
		fmt.Fprintln(tw, "(NOTES since start: adopted = records taken over after a lost answer; probe_answers = requests a paused lane's probe delivered, not sent again; 429s and rate = the CRM's quota; docs/crm-guide.md)")
	}
	return tw.Flush()
}

// clock formats t as the CLI's tables show times: local 24-hour time, with
// the date when it is not today (the status page's format too).
func clock(t time.Time) string {
	t = t.Local()
	if y, m, d := t.Date(); y == time.Now().Year() && m == time.Now().Month() && d == time.Now().Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

// lastErrorCell is the LAST ERROR column: the time and the error, and when
// the lane acked something after it, when it recovered.
func lastErrorCell(l LaneStatus) string {
	if l.LastError == "" {
		return "-"
	}
	msg := l.LastError
	if len(msg) > 60 {
		msg = msg[:57] + "..."
	}
	if l.LastErrorAt != nil {
		msg = clock(*l.LastErrorAt) + " " + msg
	}
	if l.RecoveredAt != nil {
		msg = "recovered " + clock(*l.RecoveredAt) + " (was " + msg + ")"
	}
	return msg
}

// laneOf derives a lane's stage, partition and stream from its consumer
// name (dispatcher-003).
func laneOf(names topology.Names, consumer string) (topology.Stage, int, string, error) {
	i := strings.LastIndexByte(consumer, '-')
	if i <= 0 {
		return "", 0, "", fmt.Errorf("%w: lane %q is not <stage>-<partition>, e.g. dispatcher-003", config.ErrInvalid, consumer)
	}
	stage := topology.Stage(consumer[:i])
	p, err := strconv.Atoi(consumer[i+1:])
	stream, _ := names.StageFilter(stage, 0)
	switch {
	case stream == "":
		return "", 0, "", fmt.Errorf("%w: lane %q: stage %q is not one of enricher, dispatcher, inbound", config.ErrInvalid, consumer, stage)
	case err != nil || p < 0 || p >= names.Partitions() || names.ConsumerName(stage, p) != consumer:
		return "", 0, "", fmt.Errorf("%w: lane %q: partition must be 000..%03d", config.ErrInvalid, consumer, names.Partitions()-1)
	}
	return stage, p, stream, nil
}

// cliTimeout bounds an operator command's JetStream requests.
const cliTimeout = 10 * time.Second

// withNATS loads the config, connects and calls f with the topology names.
func withNATS(cfgPath, name string, f func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) error) error {
	c, err := LoadConfig(cfgPath, "all")
	if err != nil {
		return err
	}
	nc, js, err := connectCLI(c, name)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	return f(ctx, nc, js, topology.New(c.Topology))
}

func statusCmd() *cobra.Command {
	var cfgPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every lane, parked counts, live services and CRM health (from JetStream, not logs)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNATS(cfgPath, "status", func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) error {
				st, err := collectStatus(ctx, nc, js, names)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), st)
				}
				return writeStatus(cmd.OutOrStdout(), st)
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func pauseCmd() *cobra.Command {
	var cfgPath, why string
	var d time.Duration
	cmd := &cobra.Command{
		Use:     "pause LANE",
		Short:   "Pause a lane's consumer on the server (nothing is delivered until it resumes)",
		Example: "  sluice pause dispatcher-003 --for 30m",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if d <= 0 {
				return fmt.Errorf("%w: --for must be > 0", config.ErrInvalid)
			}
			return withNATS(cfgPath, "pause", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, names topology.Names) error {
				_, _, stream, err := laneOf(names, args[0])
				if err != nil {
					return err
				}
				until := time.Now().Add(d)
				if err := auditAction(ctx, js, names, watchdog.AuditRecord{Action: watchdog.AuditPause,
					Consumer: args[0], Until: &until, Reason: why}); err != nil {
					return err
				}
				r, err := js.PauseConsumer(ctx, stream, args[0], until)
				if err != nil {
					return fmt.Errorf("pause %s: %w", args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "paused %s until %s\n", args[0], r.PauseUntil.UTC().Format(time.RFC3339))
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().DurationVar(&d, "for", 10*time.Minute, "how long to pause")
	cmd.Flags().StringVar(&why, "reason", "", "why (kept in the audit stream)")
	return cmd
}

func resumeCmd() *cobra.Command {
	var cfgPath, why string
	cmd := &cobra.Command{
		Use:     "resume LANE",
		Short:   "Resume a paused lane's consumer",
		Example: "  sluice resume dispatcher-003",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNATS(cfgPath, "resume", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, names topology.Names) error {
				_, _, stream, err := laneOf(names, args[0])
				if err != nil {
					return err
				}
				if err := auditAction(ctx, js, names, watchdog.AuditRecord{Action: watchdog.AuditResume,
					Consumer: args[0], Reason: why}); err != nil {
					return err
				}
				if _, err := js.ResumeConsumer(ctx, stream, args[0]); err != nil {
					return fmt.Errorf("resume %s: %w", args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "resumed %s\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().StringVar(&why, "reason", "", "why (kept in the audit stream)")
	return cmd
}
