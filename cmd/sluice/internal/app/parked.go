package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/redact"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// parkedCmd is `sluice parked ls|show|replay|discard`: the operator's tools
// for keys whose events a stage parked (per-key poison isolation, see
// mesh/lane/isolate.go).
func parkedCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "parked",
		Short: "List, show, replay or discard parked keys",
		Long: "A key is parked at a stage when one of its events was parked (CRM 4xx, mapping error, missing\n" +
			"lookup); its later events are parked behind it, in order, until it is replayed or discarded.",
	}
	cmd.PersistentFlags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List parked keys with stage, state, count, age and reason",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withParkedRedacted(cfgPath, time.Minute, func(ctx context.Context, p *lane.Parked, _ topology.Names, _ jetstream.JetStream, red *redact.Redactor) error {
				keys, err := p.List(ctx)
				if err != nil {
					return err
				}
				for i := range keys {
					keys[i].Reason = red.Text(keys[i].Reason)
				}
				if asJSON {
					return json.NewEncoder(cmd.OutOrStdout()).Encode(keys)
				}
				return writeParkedKeys(cmd.OutOrStdout(), keys, time.Now())
			})
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var stage string
	show := &cobra.Command{
		Use:   "show KEY",
		Short: "Show the parked messages of KEY in order, with their Sluice-Park-* headers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withParkedRedacted(cfgPath, time.Minute, func(ctx context.Context, p *lane.Parked, _ topology.Names, _ jetstream.JetStream, red *redact.Redactor) error {
				stages := []topology.Stage{topology.Stage(stage)}
				if stage == "" {
					stages = topology.Stages()
				}
				n := 0
				for _, s := range stages {
					msgs, err := p.Messages(ctx, s, args[0])
					if err != nil {
						return err
					}
					for _, m := range msgs {
						writeParkedMsg(cmd.OutOrStdout(), m, red)
						n++
					}
				}
				if n == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "no parked messages of key %q\n", args[0])
				}
				return nil
			})
		},
	}
	show.Flags().StringVar(&stage, "stage", "", "stage ("+stageList()+"); default: all")

	var wait time.Duration
	var rounds int
	replay := &cobra.Command{
		Use:   "replay KEY",
		Short: "Re-run KEY's parked events through the stage in their original order, then unblock KEY",
		Long: "Re-publishes KEY's parked messages, oldest first, into the stage's input (events for the\n" +
			"enricher, dispatch for the dispatcher) with new message ids, and waits until the lane has run\n" +
			"them and unblocked KEY. Events of KEY that arrive meanwhile stay parked behind the replayed\n" +
			"ones and are replayed by a further round. Safe to run again after an interruption.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withParked(cfgPath, wait*time.Duration(rounds+1)+time.Minute, func(ctx context.Context, p *lane.Parked, names topology.Names, js jetstream.JetStream) error {
				s, err := parkedStage(ctx, p, args[0], stage)
				if err != nil {
					return err
				}
				if err := auditAction(ctx, js, names, watchdog.AuditRecord{Action: watchdog.AuditReplay, Stage: s, Key: args[0]}); err != nil {
					return err
				}
				res, err := p.Replay(ctx, s, args[0], wait, rounds)
				if err != nil {
					return fmt.Errorf("replay %s at %s (%d re-published): %w", args[0], s, res.Republished, err)
				}
				state := "unblocked"
				if !res.Unblocked {
					state = "still replaying (the lane has not finished; run replay again to check)"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "replayed %d event(s) of %s at %s in %d round(s): %s\n",
					res.Republished, args[0], s, res.Rounds, state)
				return nil
			})
		},
	}
	replay.Flags().StringVar(&stage, "stage", "", "stage; default: the one stage where KEY is parked")
	replay.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the lane per round")
	replay.Flags().IntVar(&rounds, "rounds", 5, "most rounds (events arriving during a round need another)")

	var reason, by string
	discard := &cobra.Command{
		Use:   "discard KEY --reason TEXT",
		Short: "Drop KEY's parked events for good and unblock KEY (audited)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return errors.New("--reason is required (it is recorded in the audit)")
			}
			return withParked(cfgPath, time.Minute, func(ctx context.Context, p *lane.Parked, names topology.Names, _ jetstream.JetStream) error {
				s, err := parkedStage(ctx, p, args[0], stage)
				if err != nil {
					return err
				}
				n, err := p.Discard(ctx, s, args[0], reason, by)
				if errors.Is(err, lane.ErrNoAuditStream) {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: no stream stores %s; the audit record was not kept\n",
						names.AuditSubject("parked"))
					err = nil
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "discarded %d event(s) of %s at %s; key unblocked\n", n, args[0], s)
				return nil
			})
		},
	}
	discard.Flags().StringVar(&stage, "stage", "", "stage; default: the one stage where KEY is parked")
	discard.Flags().StringVar(&reason, "reason", "", "why the events are dropped (required, audited)")
	discard.Flags().StringVar(&by, "by", os.Getenv("USER"), "who discards (audited)")
	cmd.AddCommand(ls, show, replay, discard)
	return cmd
}

// withParked loads the config, connects to nats.url (or the embedded
// server's listen address) and calls f.
func withParked(cfgPath string, timeout time.Duration, f func(context.Context, *lane.Parked, topology.Names, jetstream.JetStream) error) error {
	return withParkedRedacted(cfgPath, timeout, func(ctx context.Context, p *lane.Parked, names topology.Names, js jetstream.JetStream, _ *redact.Redactor) error {
		return f(ctx, p, names, js)
	})
}

// withParkedRedacted is withParked that also passes the redactor of the
// config's ledger.sensitive_fields, for what is shown to the operator.
func withParkedRedacted(cfgPath string, timeout time.Duration, f func(context.Context, *lane.Parked, topology.Names, jetstream.JetStream, *redact.Redactor) error) error {
	c, err := LoadConfig(cfgPath, "all")
	if err != nil {
		return err
	}
	nc, js, err := connectCLI(c, "parked")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	names := topology.New(c.Topology)
	p, err := lane.OpenParked(ctx, js, names)
	if err != nil {
		return err
	}
	return f(ctx, p, names, js, redact.New(c.Ledger.SensitiveFields...))
}

// parkedStage is the stage given, or the only stage where key is parked.
func parkedStage(ctx context.Context, p *lane.Parked, key, stage string) (topology.Stage, error) {
	if stage != "" {
		return topology.Stage(stage), nil
	}
	keys, err := p.List(ctx)
	if err != nil {
		return "", err
	}
	var found []topology.Stage
	for _, k := range keys {
		if k.Key == key {
			found = append(found, k.Stage)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: %s", lane.ErrNotParked, key)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("key %s is parked at %v: choose one with --stage", key, found)
	}
}

func writeParkedKeys(w io.Writer, keys []lane.ParkedKey, now time.Time) error {
	if len(keys) == 0 {
		_, err := fmt.Fprintln(w, "no parked keys")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tKEY\tTYPE\tSTATE\tCOUNT\tAGE\tFIRST\tREASON")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", k.Stage, k.Key, k.Type, k.State, k.Count,
			now.Sub(k.ParkedAt).Round(time.Second), k.FirstID, k.Reason)
	}
	return tw.Flush()
}

// writeParkedMsg prints one parked message: its Sluice-*, Crm-* and
// Nats-Msg-Id headers (texts through red.Text: a CRM's answer may quote
// values) and its body with sensitive fields redacted (red.JSON).
func writeParkedMsg(w io.Writer, m *jetstream.RawStreamMsg, red *redact.Redactor) {
	fmt.Fprintf(w, "parked seq %d  %s  stored %s\n", m.Sequence, m.Subject, m.Time.UTC().Format(time.RFC3339))
	var hs []string
	for k := range m.Header {
		if strings.HasPrefix(k, "Sluice-") || strings.HasPrefix(k, "Crm-") || k == nats.MsgIdHdr {
			hs = append(hs, k)
		}
	}
	sort.Strings(hs)
	for _, k := range hs {
		fmt.Fprintf(w, "  %s: %s\n", k, red.Text(m.Header.Get(k)))
	}
	fmt.Fprintf(w, "  %s\n\n", red.Body(m.Data))
}

// stageList is the lane stages, comma-separated, for help texts.
func stageList() string {
	names := make([]string, 0, len(topology.Stages()))
	for _, s := range topology.Stages() {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}
