package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"sluice.dev/mesh/config"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// AuditEntry is one operator action kept in the audit stream.
type AuditEntry struct {
	Seq     uint64          `json:"seq"`
	Subject string          `json:"subject"`
	At      time.Time       `json:"at"`
	Record  json.RawMessage `json:"record"`
}

// listAudit reads the audit stream (<prefix>.audit.>) from since on, oldest
// first, at most limit entries.
func listAudit(ctx context.Context, js jetstream.JetStream, names topology.Names, since time.Time, limit int) ([]AuditEntry, error) {
	s, err := js.Stream(ctx, names.AuditStream())
	if err != nil {
		return nil, fmt.Errorf("audit stream %s: %w", names.AuditStream(), err)
	}
	last := s.CachedInfo().State.LastSeq
	if s.CachedInfo().State.Msgs == 0 {
		return nil, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return nil, err
	}
	var out []AuditEntry
	retries := 0
	for len(out) < limit {
		batch, err := c.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err == nil {
			err = notReady(batch.Error())
		}
		if notReadyAgain(err, &retries) {
			continue
		}
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			out = append(out, AuditEntry{Seq: md.Sequence.Stream, Subject: m.Subject(), At: md.Timestamp, Record: m.Data()})
			if md.Sequence.Stream >= last || len(out) >= limit {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
	}
	return out, nil
}

// notReady keeps a batch's "no responders" (a fresh ordered consumer on a
// cluster that does not answer yet) and drops the rest, which the loop
// reads from the batch itself.
func notReady(err error) error {
	if errors.Is(err, nats.ErrNoResponders) {
		return err
	}
	return nil
}

// auditAction publishes an operator action from the command line to
// <prefix>.audit.<action> before it is carried out (who: $USER).
func auditAction(ctx context.Context, js jetstream.JetStream, names topology.Names, rec watchdog.AuditRecord) error {
	rec.By = os.Getenv("USER")
	if rec.By == "" {
		rec.By = "operator"
	}
	rec.At = time.Now().UTC()
	rec.Source = "cli"
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, names.Config().Prefix+".audit."+rec.Action, b); err != nil {
		return fmt.Errorf("audit %s (refused: an action that cannot be audited is not carried out): %w", rec.Action, err)
	}
	return nil
}

func writeAudit(w io.Writer, es []AuditEntry) {
	if len(es) == 0 {
		fmt.Fprintln(w, "no audited actions")
		return
	}
	for _, e := range es {
		fmt.Fprintf(w, "%s  %-28s %s\n", e.At.UTC().Format(time.RFC3339), e.Subject, e.Record)
	}
}

// auditCmd is `sluice audit`: the delivery reconciliation (audit.go),
// and `sluice audit actions`, the operators' actions (pause, resume,
// replay, parked replay/discard: who, when, what, why).
func auditCmd() *cobra.Command {
	cmd := auditReconcileCmd()
	var cfgPath, since string
	var limit int
	var asJSON bool
	actions := &cobra.Command{
		Use:   "actions",
		Short: "List audited operator actions from the audit stream (who, when, what, why)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := parseWhen(since, time.Now())
			if err != nil {
				return fmt.Errorf("%w: --since: %w", config.ErrInvalid, err)
			}
			return withNATS(cfgPath, "audit", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, names topology.Names) error {
				es, err := listAudit(ctx, js, names, from, limit)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(cmd.OutOrStdout()).Encode(es)
				}
				writeAudit(cmd.OutOrStdout(), es)
				return nil
			})
		},
	}
	actions.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	actions.Flags().StringVar(&since, "since", "168h", "RFC 3339 time or a duration ago")
	actions.Flags().IntVar(&limit, "limit", 1000, "at most this many entries")
	actions.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(actions)
	return cmd
}
