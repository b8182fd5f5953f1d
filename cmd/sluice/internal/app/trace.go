package app

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"sluice.dev/mesh/config"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// traceCmd is `sluice trace EVENT_ID`.
func traceCmd() *cobra.Command {
	var cfgPath, since string
	var o ledger.TraceOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "trace EVENT_ID [--key K]",
		Short: "Show the life of one event: accepted, enriched, delivered or parked (why), replays, with times",
		Long: "Gathers what the events, ledger, parked, dispatch and audit streams say about one event: when it\n" +
			"was accepted, forwarded to the CRM, answered (status, response time, attempts) or parked (stage,\n" +
			"reason, the CRM's answer), replayed or discarded by an operator, and where it is now. Payload,\n" +
			"CRM request body and CRM answer are shown with ledger.sensitive_fields and secret-like fields\n" +
			"redacted. --key makes it read that key only (fast); without it the events stream's message\n" +
			"ids and then the ledger are searched.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if since != "" {
				t, err := parseWhen(since, time.Now())
				if err != nil {
					return fmt.Errorf("%w: --since: %w", config.ErrInvalid, err)
				}
				o.Since = t
			}
			c, err := LoadConfig(cfgPath, "all")
			if err != nil {
				return err
			}
			nc, js, err := connectCLI(c, "trace")
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, stop := signalContext()
			defer stop()
			o.SensitiveFields = c.Ledger.SensitiveFields
			bar := newReadBar(cmd.ErrOrStderr(), !asJSON && isTerminal(os.Stderr))
			o.Progress = bar.update
			tr, err := ledger.TraceEvent(ctx, js, topology.New(c.Topology), args[0], o)
			bar.finish()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), tr)
			}
			writeTrace(cmd.OutOrStdout(), tr)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	f.StringVar(&o.Key, "key", "", "the event's key (reads that key only)")
	f.StringVar(&since, "since", "", "search from this time: RFC 3339 or a duration ago (default: everything kept)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeTrace(w io.Writer, tr ledger.Trace) {
	fmt.Fprintf(w, "event %s  type %s  key %s  partition %d\n", tr.EventID, tr.Type, tr.Key, tr.Partition)
	fmt.Fprintf(w, "now: %s", tr.State)
	if tr.Why != "" {
		fmt.Fprintf(w, " — %s", tr.Why)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nAT\tSTEP\tSTAGE\tMESSAGE\tDETAIL")
	for _, s := range tr.Steps {
		where := ""
		if s.Stream != "" {
			where = s.Stream + " seq " + strconv.FormatUint(s.Seq, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.At.UTC().Format("2006-01-02T15:04:05.000Z"), s.Step, s.Stage, where, s.Detail)
	}
	_ = tw.Flush()
	if r := tr.Request; r != nil {
		fmt.Fprintf(w, "\nCRM request (from %s): %s %s", r.From, r.Method, r.Path)
		if r.UpdatePath != "" {
			fmt.Fprintf(w, " (or %s %s once the CRM id is known)", r.UpdateMethod, r.UpdatePath)
		}
		if r.Object != "" {
			fmt.Fprintf(w, "  object %s, mode %s", r.Object, r.Mode)
		}
		fmt.Fprintln(w)
		if len(r.Body) > 0 {
			fmt.Fprintf(w, "  body: %s\n", r.Body)
		}
	}
	if r := tr.Response; r != nil {
		fmt.Fprintf(w, "CRM answer: %d", r.Status)
		if r.Took > 0 {
			fmt.Fprintf(w, " in %s", r.Took.Round(time.Microsecond))
		}
		if r.CRMID != "" {
			fmt.Fprintf(w, ", CRM id %s", r.CRMID)
		}
		fmt.Fprintln(w)
		if len(r.Body) > 0 {
			fmt.Fprintf(w, "  body: %s\n", r.Body)
		}
	}
	if len(tr.Payload) > 0 {
		fmt.Fprintf(w, "\nevent as accepted: %s\n", tr.Payload)
	}
}
