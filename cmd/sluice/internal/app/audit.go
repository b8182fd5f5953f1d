package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"sluice.dev/mesh/config"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/topology"
)

// exitFindings is the exit status of an audit that found lost or
// reordered events (1 is an error, 2 an invalid configuration).
const exitFindings = 3

// RunAudit is `sluice audit`: it reconciles the accepted events of the
// range against the delivery ledger and, with publish, stores the summary
// on <prefix>.ledger.audit for the status page. The result's OK is false
// when an event was lost or a key reordered.
func RunAudit(ctx context.Context, js jetstream.JetStream, names topology.Names, o ledger.AuditOptions, publish bool) (ledger.Result, error) {
	res, err := ledger.Audit(ctx, js, names, o)
	if err != nil {
		return res, err
	}
	if publish {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := ledger.PublishSummary(pctx, js, names, ledger.Summarize(res)); err != nil {
			return res, err
		}
	}
	return res, nil
}

// auditFindings is the error of an audit that found something.
func auditFindings(r ledger.Result) error {
	if r.OK() {
		return nil
	}
	return fmt.Errorf("%w: %d lost, %d reordered pair(s) in %d key(s)", ledger.ErrFindings,
		r.Totals.Lost, r.Totals.Reordered, r.Totals.ReorderedKeys)
}

// auditReconcileCmd is `sluice audit` itself; `sluice audit actions` is
// its subcommand (auditlog.go).
func auditReconcileCmd() *cobra.Command {
	var cfgPath, since, until string
	var o ledger.AuditOptions
	var asJSON, publish, progress bool
	cmd := &cobra.Command{
		Use:   "audit [--since T] [--until T] [--key K] [--type T] [--json]",
		Short: "Prove from the delivery ledger that every accepted event was delivered or parked, in order per key",
		Long: "Reconciles the events the events stream accepted (by the time it stored them) against the\n" +
			"delivery ledger, the parked and dispatch streams and the enricher lanes' progress. Per key it\n" +
			"reports events LOST (neither delivered, parked, in flight nor discarded), pairs REORDERED\n" +
			"(delivered against accepted order), DUPLICATES (answered 2xx by the CRM more than once) and\n" +
			"possible duplicates, UNCERTAIN creates (the CRM's answer was lost; how each was resolved) and\n" +
			"the oldest undelivered event. Exit status 3 when something is lost or\n" +
			"reordered. TIME is RFC 3339 or a duration ago (24h); default: everything the ledger holds.\n" +
			"`sluice audit actions` lists the operators' audited actions.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			var err error
			if since != "" {
				if o.Since, err = parseWhen(since, now); err != nil {
					return fmt.Errorf("%w: --since: %w", config.ErrInvalid, err)
				}
			}
			if until != "" {
				if o.Until, err = parseWhen(until, now); err != nil {
					return fmt.Errorf("%w: --until: %w", config.ErrInvalid, err)
				}
			}
			c, err := LoadConfig(cfgPath, "all")
			if err != nil {
				return err
			}
			nc, js, err := connectCLI(c, "audit")
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, stop := signalContext()
			defer stop()
			bar := newReadBar(cmd.ErrOrStderr(), progress || (!asJSON && isTerminal(os.Stderr)))
			o.Progress = bar.update
			res, err := RunAudit(ctx, js, topology.New(c.Topology), o, publish)
			bar.finish()
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else {
				writeAuditResult(cmd.OutOrStdout(), res, time.Now())
			}
			return auditFindings(res)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	f.StringVar(&since, "since", "", "first accepted time: RFC 3339 or a duration ago (default: the ledger's start)")
	f.StringVar(&until, "until", "", "last accepted time: RFC 3339 or a duration ago (default: now)")
	f.StringVar(&o.Key, "key", "", "audit this key only")
	f.StringVar(&o.Type, "type", "", "audit this event type only")
	f.BoolVar(&asJSON, "json", false, "print the whole report as JSON")
	f.DurationVar(&o.Recheck, "recheck", 2*time.Second, "wait before looking again at events found lost (negative: no second look)")
	f.BoolVar(&publish, "publish", true, "store the summary for the status page")
	f.BoolVar(&progress, "progress", false, "show the progress bar even when stderr is not a terminal")
	return cmd
}

// readBar is a progress bar over an audit's or a trace's reads; a nil
// *progressbar.ProgressBar inside means off.
type readBar struct {
	w    io.Writer
	on   bool
	bar  *progressbar.ProgressBar
	what string
}

func newReadBar(w io.Writer, on bool) *readBar { return &readBar{w: w, on: on} }

// longRead is how many messages make a read long enough for a bar.
const longRead = 10 * 1000

func (b *readBar) update(what string, done, total uint64) {
	if !b.on || max(done, total) < longRead {
		return
	}
	if b.bar == nil || what != b.what {
		b.finish()
		n := int64(total)
		if n == 0 {
			n = -1 // unknown: a spinner
		}
		b.bar = progressbar.NewOptions64(n, progressbar.OptionSetWriter(b.w), progressbar.OptionSetDescription("reading "+what),
			progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.w) }))
		b.what = what
	}
	_ = b.bar.Set64(int64(done))
}

func (b *readBar) finish() {
	if b.bar != nil {
		_ = b.bar.Finish()
		b.bar = nil
	}
}

func writeAuditResult(w io.Writer, r ledger.Result, now time.Time) {
	scope := "every key"
	switch {
	case r.Key != "" && r.Type != "":
		scope = fmt.Sprintf("key %q, type %s", r.Key, r.Type)
	case r.Key != "":
		scope = fmt.Sprintf("key %q", r.Key)
	case r.Type != "":
		scope = "type " + r.Type
	}
	until := "now"
	if !r.Until.IsZero() {
		until = r.Until.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "audit of %s, accepted %s .. %s\n", scope, r.From.UTC().Format(time.RFC3339), until)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "%s\n", r.Totals)
	if o := r.OldestUndelivered; o != nil {
		fmt.Fprintf(w, "oldest undelivered: %s (%s, key %s, %s) accepted %s, %s ago\n", o.ID, o.Type, o.Key, o.State,
			o.AcceptedAt.UTC().Format(time.RFC3339), now.Sub(o.AcceptedAt).Round(time.Second))
	}
	if len(r.Keys) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tFINDING\tEVENT\tDETAIL")
		for _, k := range r.Keys {
			for _, l := range k.Lost {
				fmt.Fprintf(tw, "%s\tLOST\t%s\t%s seq %d accepted %s: %s\n", k.Key, l.ID, l.Type, l.Seq,
					l.AcceptedAt.UTC().Format(time.RFC3339), l.Why)
			}
			for _, p := range k.Reordered {
				if p.Earlier.State == ledger.StateParked {
					fmt.Fprintf(tw, "%s\tREORDERED\t%s\tdelivered while %s, accepted before it, is parked (the key was not held behind it)\n",
						k.Key, p.Later.ID, p.Earlier.ID)
					continue
				}
				fmt.Fprintf(tw, "%s\tREORDERED\t%s\tdelivered before %s, accepted after it\n", k.Key, p.Later.ID, p.Earlier.ID)
			}
			for _, d := range k.Duplicates {
				note := ""
				if d.Replayed {
					note = " (an operator replayed it)"
				}
				fmt.Fprintf(tw, "%s\tduplicate\t%s\t%d deliveries%s\n", k.Key, d.ID, d.Deliveries, note)
			}
			if n := len(k.PossibleDuplicates); n > 0 {
				fmt.Fprintf(tw, "%s\tpossible duplicate\t%s\tredelivered after another attempt whose answer was lost\n",
					k.Key, strings.Join(k.PossibleDuplicates, " "))
			}
			for _, u := range k.Uncertain {
				d := u.Why
				if u.Resolution != "" {
					d += "; " + u.Resolution
				}
				if u.CRMID != "" {
					d += " (CRM id " + u.CRMID + ")"
				}
				fmt.Fprintf(tw, "%s\tuncertain create\t%s\t%s\n", k.Key, u.ID, d)
			}
		}
		_ = tw.Flush()
	}
	if r.OK() {
		fmt.Fprintln(w, "OK: nothing lost, nothing reordered")
	} else {
		fmt.Fprintln(w, "FAILED: see LOST / REORDERED above; `sluice trace EVENT_ID` shows an event's life")
	}
}

// ensureLedger creates the ledger stream when the ledger is on.
func ensureLedger(ctx context.Context, js jetstream.JetStream, names topology.Names, c ledger.Config, log zerolog.Logger) error {
	if !c.Enabled {
		return nil
	}
	return whenReady(ctx, log, "ledger", startWait, func(ctx context.Context) error { return ledger.Ensure(ctx, js, names, c) })
}

// newLedgerWriter is a service's ledger writer on the connection of its
// lanes (nil with the ledger off).
func newLedgerWriter(c ledger.Config, nc *nats.Conn, names topology.Names, counters *ledger.Counters, log zerolog.Logger) (*ledger.Writer, error) {
	if !c.Enabled {
		return nil, nil
	}
	c = c.WithDefaults()
	return ledger.NewWriter(nc, names, ledger.WriterConfig{MaxPending: c.MaxPending, SensitiveFields: c.SensitiveFields,
		Enriched: c.Enriched, Bodies: c.Bodies, Logger: log, Counters: counters})
}

// ledgerCollector exports the process's ledger write counters.
func ledgerCollector(c *ledger.Counters) prometheus.Collector {
	return metrics.NewFunc("sluice_ledger_records_total",
		"Delivery-ledger records by result: written (handed to NATS), failed (no PubAck; sent again), retried (stored when sent again), unstored (given up: the message they are about was not acked and is redelivered).",
		prometheus.CounterValue, []string{"result"}, func() []metrics.Sample {
			s := func(v uint64, r string) metrics.Sample { return metrics.Sample{Labels: []string{r}, Value: float64(v)} }
			return []metrics.Sample{s(c.Written.Load(), "written"), s(c.Failed.Load(), "failed"),
				s(c.Retried.Load(), "retried"), s(c.Unstored.Load(), "unstored")}
		})
}

// isFindings reports whether err is an audit's findings (exit status 3).
func isFindings(err error) bool { return errors.Is(err, ledger.ErrFindings) }
