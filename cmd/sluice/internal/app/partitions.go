package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// `sluice partitions` changes the partition count without breaking per-key
// order: status, drain (close intake, wait for every lane to empty), switch
// (services stopped: new transforms and lanes), open. The procedure is in
// docs/runbook.md and docs/scaling.md ("Changing the partition count"); the
// stream and consumer mechanics are in mesh/topology/repartition*.go.

// laneServices are the services whose lanes (or lane consumer re-creation:
// the watchdog) must be stopped before a switch.
var laneServices = []string{enricher.ServiceName, dispatcher.ServiceName, inbound.ServiceName, watchdog.ServiceName}

// PartitionsRecord is the audit record of a partitions action, published on
// <prefix>.audit.partitions before the action is carried out.
type PartitionsRecord struct {
	Action string    `json:"action"` // drain, switch or open
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Source string    `json:"source"`
	Reason string    `json:"reason,omitempty"`
	// From is the partition count of the streams; To the new one (switch).
	From int `json:"from"`
	To   int `json:"to,omitempty"`
}

func auditPartitions(ctx context.Context, js jetstream.JetStream, names topology.Names, rec PartitionsRecord) error {
	rec.By, rec.At, rec.Source = operatorName(), time.Now().UTC(), "cli"
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, names.AuditSubject("partitions"), b); err != nil {
		return fmt.Errorf("audit partitions %s (refused: an action that cannot be audited is not carried out): %w", rec.Action, err)
	}
	return nil
}

func operatorName() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "operator"
}

// withNATSFor is withNATS with a longer deadline, cancelled by Ctrl-C.
func withNATSFor(cfgPath, name string, d time.Duration, f func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) error) error {
	c, err := LoadConfig(cfgPath, "all")
	if err != nil {
		return err
	}
	nc, js, err := connectCLI(c, name)
	if err != nil {
		return err
	}
	defer nc.Close()
	sctx, stop := signalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(sctx, d)
	defer cancel()
	return f(ctx, nc, js, topology.New(c.Topology))
}

// call bounds one JetStream round of a long-running command.
func call[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	return f(cctx)
}

// PartitionsStatus is what `sluice partitions status` reports.
type PartitionsStatus struct {
	topology.PartitionState
	// ConfigPartitions is topology.partitions of the config the CLI read.
	ConfigPartitions int `json:"config_partitions"`
	// Services lists the lane services and watchdogs answering PING.
	Services []string `json:"services"`
	// ParkedDispatcherKeys counts keys parked at the dispatcher stage.
	ParkedDispatcherKeys int `json:"parked_dispatcher_keys"`
	// Next says what to do next.
	Next string `json:"next"`
}

func collectPartitions(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) (PartitionsStatus, error) {
	st, err := call(ctx, func(ctx context.Context) (topology.PartitionState, error) { return names.ReadPartitionState(ctx, js) })
	if err != nil {
		return PartitionsStatus{}, err
	}
	ps := PartitionsStatus{PartitionState: st, ConfigPartitions: names.Partitions(), Services: laneServicesUp(nc)}
	ps.ParkedDispatcherKeys, err = call(ctx, func(ctx context.Context) (int, error) { return parkedDispatcherKeys(ctx, js, names) })
	if err != nil {
		return ps, err
	}
	ps.Next = nextStep(ps)
	return ps, nil
}

// laneServicesUp lists the lane services and watchdogs that answer PING.
func laneServicesUp(nc *nats.Conn) []string {
	svcs, _ := discover(nc)
	var out []string
	for _, s := range svcs {
		if slices.Contains(laneServices, s.Name) {
			out = append(out, s.Name+" "+s.ID)
		}
	}
	return out
}

func parkedDispatcherKeys(ctx context.Context, js jetstream.JetStream, names topology.Names) (int, error) {
	p, err := lane.OpenParked(ctx, js, names)
	if err != nil {
		return 0, err
	}
	keys, err := p.List(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		// Keys parked at a stage without an intake of its own (the
		// dispatcher) are replayed to today's partition directly.
		if spec, _ := topology.SpecOf(k.Stage); spec.Intake == "" {
			n++
		}
	}
	return n, nil
}

func nextStep(ps PartitionsStatus) string {
	for _, in := range ps.Inputs {
		if in.Switch != nil {
			return fmt.Sprintf("a switch to %d is unfinished: run `sluice partitions switch --to %d` again", in.Switch.To, in.Switch.To)
		}
	}
	n := ps.Partitions()
	switch {
	case ps.Open() && ps.ConfigPartitions != n:
		return fmt.Sprintf("the streams have %d partitions but this config says %d: services with it refuse to start; "+
			"set topology.partitions: %d, or change the count (docs/runbook.md)", n, ps.ConfigPartitions, n)
	case ps.Open():
		return "to change the count: `sluice partitions drain --reason ...` (closes intake, waits for the lanes to empty)"
	case !ps.Drained():
		return "intake is closed and the lanes are draining: `sluice partitions drain` waits for them " +
			"(the services must run); `sluice partitions open` gives up"
	case len(ps.Services) > 0 || len(ps.InUse()) > 0:
		return "drained: stop every Sluice service, then `sluice partitions switch --to N --reason ...`"
	case ps.ConfigPartitions != n:
		return fmt.Sprintf("drained and stopped: `sluice partitions switch --to %d --reason ...` (this config's count), "+
			"or `sluice partitions open` to keep %d", ps.ConfigPartitions, n)
	default:
		return "drained and stopped: `sluice partitions switch --to N --reason ...`, or `sluice partitions open` to keep " +
			fmt.Sprint(n)
	}
}

func writePartitions(w io.Writer, ps PartitionsStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tPARTITIONS\tINTAKE\tMESSAGES\tLAST SEQ")
	for _, in := range ps.Inputs {
		intake := "open"
		if !in.Open {
			intake = "closed"
			if in.Closed != "" {
				intake += " (" + in.Closed + ")"
			}
		}
		if in.Switch != nil {
			intake += "; switch unfinished: " + in.Switch.String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\n", in.Stream, in.Partitions, intake, in.Msgs, in.LastSeq)
	}
	fmt.Fprintf(tw, "config topology.partitions\t%d\t\t\t\n", ps.ConfigPartitions)
	fmt.Fprintln(tw, "\nSTAGE\tLANES\tBUSY\tPENDING\tIN USE\tPAUSED\tSTRAY")
	for _, stage := range laneStages {
		var lanes, inUse, paused, stray int
		for _, l := range ps.Lanes {
			if l.Stage != stage {
				continue
			}
			lanes++
			if l.Waiting > 0 {
				inUse++
			}
			if l.PausedUntil != nil {
				paused++
			}
			if l.Stray {
				stray++
			}
		}
		if lanes == 0 {
			continue
		}
		pending, busy := ps.Pending(stage)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", stage, lanes, busy, pending, inUse, paused, stray)
	}
	fmt.Fprintf(tw, "dispatch queue\t%d\t\t\t\t\t\n", ps.DispatchMsgs)
	tw.Flush()
	fmt.Fprintf(w, "\nservices running lanes: %s\n", orNone(ps.Services))
	if ps.ParkedDispatcherKeys > 0 {
		fmt.Fprintf(w, "keys parked at the dispatcher: %d (decide about them before a switch; a replay goes to the key's partition under the count of the day)\n", ps.ParkedDispatcherKeys)
	}
	if ps.Drained() {
		fmt.Fprintln(w, "drained: yes")
	} else {
		fmt.Fprintf(w, "drained: no\n  - %s\n", strings.Join(ps.Blockers, "\n  - "))
	}
	_, err := fmt.Fprintf(w, "next: %s\n", ps.Next)
	return err
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func partitionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "partitions",
		Short: "Change the partition count without breaking per-key order (status, drain, switch, open)",
		Long: "Changing topology.partitions moves keys to other lanes. The safe procedure (docs/runbook.md,\n" +
			"\"Changing the partition count\"): `drain` closes intake and waits until every lane is empty;\n" +
			"stop every Sluice service; `switch --to N` re-partitions the streams and lanes; start the\n" +
			"services with topology.partitions: N and `open` intake (only `open` does; a starting service keeps it closed).",
	}
	cmd.AddCommand(partitionsStatusCmd(), partitionsDrainCmd(), partitionsSwitchCmd(), partitionsOpenCmd())
	return cmd
}

func partitionsStatusCmd() *cobra.Command {
	var cfgPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Partition count of each stream, intake open or closed, lanes left to drain, running services, next step",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNATS(cfgPath, "partitions", func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) error {
				ps, err := collectPartitions(ctx, nc, js, names)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), ps)
				}
				return writePartitions(cmd.OutOrStdout(), ps)
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func partitionsDrainCmd() *cobra.Command {
	var cfgPath, why string
	var timeout, every time.Duration
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Close intake (producers get no ack and retry) and wait until every lane and the dispatch queue are empty",
		Example: "  sluice partitions drain --reason \"16 -> 32 partitions\"\n" +
			"  sluice partitions drain --timeout 0   # close intake and report, do not wait",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if why == "" {
				return fmt.Errorf("%w: --reason is required (kept in the audit stream and on the streams)", config.ErrInvalid)
			}
			return withNATSFor(cfgPath, "partitions", max(timeout, 0)+cliTimeout, func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) error {
				return drain(ctx, cmd.OutOrStdout(), nc, js, names, why, timeout, every)
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().StringVar(&why, "reason", "", "why (audited; required)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait for the lanes to empty (0: do not wait)")
	cmd.Flags().DurationVar(&every, "interval", 2*time.Second, "how often to check the lanes")
	return cmd
}

func drain(ctx context.Context, w io.Writer, nc *nats.Conn, js jetstream.JetStream, names topology.Names, why string, timeout, every time.Duration) error {
	ps, err := collectPartitions(ctx, nc, js, names)
	if err != nil {
		return err
	}
	for _, in := range ps.Inputs {
		if in.Switch != nil {
			return fmt.Errorf("%w: %s; run `sluice partitions switch --to %d` again", topology.ErrSwitchUnfinished, in.Switch, in.Switch.To)
		}
	}
	if ps.Open() {
		if err := auditPartitions(ctx, js, names, PartitionsRecord{Action: "drain", Reason: why, From: ps.Partitions()}); err != nil {
			return err
		}
	}
	note := fmt.Sprintf("closed %s by %s: %s", time.Now().UTC().Format(time.RFC3339), operatorName(), why)
	closeIntake := func() error {
		closed, err := call(ctx, func(ctx context.Context) ([]string, error) { return names.CloseIntake(ctx, js, note) })
		if len(closed) > 0 {
			fmt.Fprintf(w, "intake closed on %s: producers get no ack and retry with the same ids\n", strings.Join(closed, ", "))
		}
		return err
	}
	if err := closeIntake(); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ps, err := collectPartitions(ctx, nc, js, names)
		if err != nil {
			return err
		}
		if ps.Open() {
			// Someone ran `open` meanwhile (a starting service keeps intake
			// closed); what it let in is drained like the rest.
			fmt.Fprintln(w, "intake was opened again (`sluice partitions open` meanwhile?); closing it")
			if err := closeIntake(); err != nil {
				return err
			}
			continue
		}
		if ps.Drained() {
			fmt.Fprintf(w, "drained: every lane of the %d partitions is empty and the dispatch queue too\n", ps.Partitions())
			fmt.Fprintf(w, "next: stop every Sluice service, then `sluice partitions switch --to N --reason %q` "+
				"(or `sluice partitions open` to keep %d)\n", why, ps.Partitions())
			return nil
		}
		if line := drainProgress(ps); line != last {
			fmt.Fprintln(w, line)
			last = line
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w after %s; intake stays closed: run `sluice partitions drain` again to keep waiting, "+
				"or `sluice partitions open` to give up", topology.ErrNotDrained, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%w); intake stays closed: run `sluice partitions drain` again to keep waiting, "+
				"or `sluice partitions open` to give up", topology.ErrNotDrained, ctx.Err())
		case <-time.After(every):
		}
	}
}

// drainProgress is one line of what is left.
func drainProgress(ps PartitionsStatus) string {
	var parts []string
	for _, stage := range laneStages {
		pending, busy := ps.Pending(stage)
		if busy > 0 {
			parts = append(parts, fmt.Sprintf("%s %d events in %d lanes", stage, pending, busy))
		}
	}
	if ps.DispatchMsgs > 0 {
		parts = append(parts, fmt.Sprintf("dispatch queue %d", ps.DispatchMsgs))
	}
	line := "waiting: " + strings.Join(parts, ", ")
	if len(parts) == 0 {
		line = "waiting: " + strings.Join(ps.Blockers, "; ")
	}
	if len(ps.Services) == 0 {
		line += " (no service answers PING: start them, lanes only drain while they run)"
	}
	for _, l := range ps.Lanes {
		if l.PausedUntil != nil && (l.Pending > 0 || l.AckPending > 0) {
			line += fmt.Sprintf(" (%s paused until %s)", l.Consumer, l.PausedUntil.Format(time.RFC3339))
			break
		}
	}
	return line
}

func partitionsSwitchCmd() *cobra.Command {
	var cfgPath, why string
	var to int
	var open, allowParked, ignorePing bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "switch",
		Short: "With intake closed, the lanes drained and every service stopped: re-partition the streams and lanes",
		Example: "  sluice partitions switch --to 32 --reason \"16 -> 32 partitions\"\n" +
			"  # then start every service with topology.partitions: 32",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if why == "" {
				return fmt.Errorf("%w: --reason is required (kept in the audit stream)", config.ErrInvalid)
			}
			if to < 1 || to > 1024 {
				return fmt.Errorf("%w: --to %d is out of range 1..1024", config.ErrInvalid, to)
			}
			return withNATSFor(cfgPath, "partitions", wait+2*time.Minute, func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) error {
				return switchPartitions(ctx, cmd.OutOrStdout(), nc, js, names, switchOptions{to: to, why: why,
					open: open, allowParked: allowParked, ignorePing: ignorePing, wait: wait})
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().IntVar(&to, "to", 0, "the new partition count (required)")
	cmd.Flags().StringVar(&why, "reason", "", "why (audited; required)")
	cmd.Flags().BoolVar(&open, "open", false, "open intake right after the switch (before the services start)")
	cmd.Flags().BoolVar(&allowParked, "allow-parked", false, "switch although keys are parked at the dispatcher")
	cmd.Flags().BoolVar(&ignorePing, "ignore-ping", false,
		"ignore Sluice services answering PING (another topology's, on the same NATS account); lane clients still refuse")
	cmd.Flags().DurationVar(&wait, "wait", 20*time.Second, "how long to wait for the stopped services' pull requests to expire")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

type switchOptions struct {
	to                            int
	why                           string
	open, allowParked, ignorePing bool
	wait                          time.Duration
}

func switchPartitions(ctx context.Context, w io.Writer, nc *nats.Conn, js jetstream.JetStream, names topology.Names, o switchOptions) error {
	ps, err := collectPartitions(ctx, nc, js, names)
	if err != nil {
		return err
	}
	switch {
	case len(ps.Services) > 0 && !o.ignorePing:
		return fmt.Errorf("%w: %s answer PING; stop every Sluice service first (a running lane would re-create "+
			"its old consumer)", topology.ErrLanesInUse, strings.Join(ps.Services, ", "))
	case ps.ParkedDispatcherKeys > 0 && !o.allowParked:
		return fmt.Errorf("%w: %d key(s) are parked at the dispatcher: replay or discard them first (sluice parked ls), "+
			"or pass --allow-parked to keep them parked across the switch (a later replay goes to the key's new partition)",
			topology.ErrNotDrained, ps.ParkedDispatcherKeys)
	}
	// A stopped service's pull requests stay on the server until they
	// expire (the lanes' pull expiry, 5 s by default).
	for deadline := time.Now().Add(o.wait); len(ps.InUse()) > 0 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		if ps, err = collectPartitions(ctx, nc, js, names); err != nil {
			return err
		}
	}
	if ps.Drained() && len(ps.InUse()) == 0 {
		// Audit what is carried out, not what SwitchPartitions refuses.
		if err := auditPartitions(ctx, js, names, PartitionsRecord{Action: "switch", Reason: o.why,
			From: ps.Partitions(), To: o.to}); err != nil {
			return err
		}
	}
	res, err := call(ctx, func(ctx context.Context) (topology.SwitchResult, error) {
		return names.SwitchPartitions(ctx, js, o.to)
	})
	if err != nil {
		return err
	}
	if res.NoChange {
		fmt.Fprintf(w, "the streams and lanes already have %d partitions: nothing to do\n", o.to)
	} else {
		fmt.Fprintf(w, "switched %d -> %d partitions: %d lane consumers deleted, %d created; %d lane fences set, %d removed\n",
			res.From, res.To, len(res.Deleted), len(res.Created), res.FencesWritten, res.FencesRemoved)
		for stream, seq := range res.Start {
			fmt.Fprintf(w, "  %s: new lanes start at sequence %d (the history before stays for replay)\n", stream, seq)
		}
		if len(res.Paused) > 0 {
			fmt.Fprintf(w, "  note: %s were paused; the new lanes are not\n", strings.Join(res.Paused, ", "))
		}
	}
	if o.open {
		opened, err := call(ctx, func(ctx context.Context) ([]string, error) { return names.WithPartitions(o.to).OpenIntake(ctx, js) })
		if err != nil {
			return err
		}
		if len(opened) > 0 {
			fmt.Fprintf(w, "intake open on %s\n", strings.Join(opened, ", "))
		}
	}
	fmt.Fprintf(w, "next: start every Sluice service with topology.partitions: %d (SLUICE_TOPOLOGY_PARTITIONS=%d); "+
		"then `sluice partitions open` (a starting service keeps intake closed); services with another count refuse to start\n", o.to, o.to)
	return nil
}

func partitionsOpenCmd() *cobra.Command {
	var cfgPath, why string
	cmd := &cobra.Command{
		Use:   "open",
		Short: "Accept events again: bind the producer subjects (refused unless this config's topology.partitions matches the streams)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNATS(cfgPath, "partitions", func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names topology.Names) error {
				st, err := names.ReadPartitionState(ctx, js)
				if err != nil {
					return err
				}
				closed := slices.ContainsFunc(st.Inputs, func(in topology.InputState) bool { return !in.Open })
				matches := !slices.ContainsFunc(st.Inputs, func(in topology.InputState) bool {
					return in.Partitions != names.Partitions() || in.Switch != nil
				})
				if closed && matches { // else OpenIntake refuses or has nothing to do
					if err := auditPartitions(ctx, js, names, PartitionsRecord{Action: "open", Reason: why,
						From: st.Partitions()}); err != nil {
						return err
					}
				}
				opened, err := names.OpenIntake(ctx, js)
				if err != nil {
					return err
				}
				if len(opened) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "intake is already open")
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "intake open on %s\n", strings.Join(opened, ", "))
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().StringVar(&why, "reason", "", "why (kept in the audit stream)")
	return cmd
}
