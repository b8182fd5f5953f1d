package app

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// Audited actions of sluice crm-ids (<prefix>.audit.<action>).
const (
	auditCRMIDSet    = "crm_ids_set"
	auditCRMIDRemove = "crm_ids_rm"
	auditCRMIDImport = "crm_ids_import"
)

// crmIDsCmd is `sluice crm-ids get|set|ls|rm|import`: the operator's tools
// for the CRM id map (which CRM record an entity is), e.g. after a CRM
// migration or to point an entity at a record made outside Sluice.
// Changes are audited (sluice audit actions) before they are made.
func crmIDsCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "crm-ids",
		Short: "Get, set, list, remove or import CRM record ids of entities (the dispatcher's id map)",
		Long: "The dispatcher remembers the CRM record id of every entity it created, by CRM object and id key\n" +
			"(catalog crm.object and crm.id_key, the event key by default); updates go to that record.\n" +
			"Set, rm and import are audited (sluice audit actions) and need --reason.",
	}
	cmd.PersistentFlags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	with := func(d time.Duration, f func(ctx context.Context, m *dispatcher.IDMap, js jetstream.JetStream, names topology.Names) error) error {
		return withNATSFor(cfgPath, "crm-ids", d, func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, names topology.Names) error {
			m, err := dispatcher.OpenIDMap(ctx, js, names)
			if err != nil {
				return err
			}
			return f(ctx, m, js, names)
		})
	}
	var asJSON bool
	get := &cobra.Command{
		Use:   "get OBJECT ID_KEY",
		Short: "Print the CRM id of one entity",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return with(cliTimeout, func(ctx context.Context, m *dispatcher.IDMap, _ jetstream.JetStream, _ topology.Names) error {
				e, found, err := m.Get(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				if !found {
					return fmt.Errorf("%w: no CRM id for %s %q", errNotFound, args[0], args[1])
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), e)
				}
				fmt.Fprintln(cmd.OutOrStdout(), e.CRMID)
				return nil
			})
		},
	}
	get.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var reason string
	set := &cobra.Command{
		Use:   "set OBJECT ID_KEY CRM_ID",
		Short: "Point an entity at a CRM record (audited)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needReason(reason); err != nil {
				return err
			}
			if err := dispatcher.CheckIDEntry(args[0], args[1], args[2]); err != nil || args[2] == "" {
				return fmt.Errorf("%w: %w", config.ErrInvalid, errors.Join(err, emptyID(args[2])))
			}
			return with(cliTimeout, func(ctx context.Context, m *dispatcher.IDMap, js jetstream.JetStream, names topology.Names) error {
				if err := auditAction(ctx, js, names, watchdog.AuditRecord{Action: auditCRMIDSet, Key: args[0] + " " + args[1],
					Reason: reason + " (crm id " + args[2] + ")"}); err != nil {
					return err
				}
				prev, err := m.Set(ctx, args[0], args[1], args[2])
				if err != nil {
					return err
				}
				was := "none"
				if prev != "" {
					was = prev
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %q → %s (was %s)\n", args[0], args[1], args[2], was)
				return nil
			})
		},
	}
	set.Flags().StringVar(&reason, "reason", "", "why (kept in the audit stream); required")

	rm := &cobra.Command{
		Use:   "rm OBJECT ID_KEY",
		Short: "Forget an entity's CRM id: its next upsert creates, its next update parks (audited)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needReason(reason); err != nil {
				return err
			}
			return with(cliTimeout, func(ctx context.Context, m *dispatcher.IDMap, js jetstream.JetStream, names topology.Names) error {
				if err := dispatcher.CheckIDEntry(args[0], args[1], ""); err != nil {
					return fmt.Errorf("%w: %w", config.ErrInvalid, err)
				}
				if err := auditAction(ctx, js, names, watchdog.AuditRecord{Action: auditCRMIDRemove, Key: args[0] + " " + args[1],
					Reason: reason}); err != nil {
					return err
				}
				found, err := m.Remove(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				if !found {
					return fmt.Errorf("%w: no CRM id for %s %q", errNotFound, args[0], args[1])
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s %q\n", args[0], args[1])
				return nil
			})
		},
	}
	rm.Flags().StringVar(&reason, "reason", "", "why (kept in the audit stream); required")

	var object string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the id map (one object with --object)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return with(10*time.Minute, func(ctx context.Context, m *dispatcher.IDMap, _ jetstream.JetStream, _ topology.Names) error {
				out := cmd.OutOrStdout()
				if asJSON {
					enc := json.NewEncoder(out)
					return m.List(ctx, object, func(e dispatcher.IDEntry) error { return enc.Encode(e) })
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "OBJECT\tID KEY\tCRM ID\tUPDATED")
				n := 0
				err := m.List(ctx, object, func(e dispatcher.IDEntry) error {
					n++
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Object, strconv.Quote(e.IDKey), e.CRMID, e.Updated.UTC().Format(time.RFC3339))
					return nil
				})
				if ferr := tw.Flush(); err == nil {
					err = ferr
				}
				fmt.Fprintf(out, "%d entr%s\n", n, map[bool]string{true: "y", false: "ies"}[n == 1])
				return err
			})
		},
	}
	ls.Flags().StringVar(&object, "object", "", "only this CRM object")
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")

	var dryRun bool
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Load id map entries from a CSV file with the header object,id_key,crm_id (audited)",
		Long: "Every row is checked before anything is written; a bad row fails the import with its line.\n" +
			"Existing entries are replaced. '-' reads standard input.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needReason(reason); err != nil {
				return err
			}
			rows, err := readIDFile(args[0], cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("%w: %s: %w", config.ErrInvalid, args[0], err)
			}
			if dryRun {
				fmt.Fprintf(cmd.OutOrStdout(), "%d entries checked; nothing written (--dry-run)\n", len(rows))
				return nil
			}
			return with(10*time.Minute, func(ctx context.Context, m *dispatcher.IDMap, js jetstream.JetStream, names topology.Names) error {
				if err := auditAction(ctx, js, names, watchdog.AuditRecord{Action: auditCRMIDImport,
					Reason: fmt.Sprintf("%s (%d entries from %s)", reason, len(rows), args[0])}); err != nil {
					return err
				}
				replaced := 0
				for i, r := range rows {
					prev, err := m.Set(ctx, r.Object, r.IDKey, r.CRMID)
					if err != nil {
						return fmt.Errorf("entry %d of %d (%d written): %w", i+1, len(rows), i, err)
					}
					if prev != "" && prev != r.CRMID {
						replaced++
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "imported %d entries (%d replaced a different id)\n", len(rows), replaced)
				return nil
			})
		},
	}
	imp.Flags().StringVar(&reason, "reason", "", "why (kept in the audit stream); required")
	imp.Flags().BoolVar(&dryRun, "dry-run", false, "check the file, write nothing")
	cmd.AddCommand(get, set, ls, rm, imp)
	return cmd
}

var errNotFound = errors.New("not found")

func needReason(r string) error {
	if strings.TrimSpace(r) == "" {
		return fmt.Errorf("%w: --reason is required (it is kept in the audit stream)", config.ErrInvalid)
	}
	return nil
}

func emptyID(id string) error {
	if id == "" {
		return errors.New("crm id: required")
	}
	return nil
}

// maxImportRows bounds one import file.
const maxImportRows = 1_000_000

// readIDFile reads and checks a CSV id map file (header object,id_key,crm_id).
func readIDFile(path string, stdin io.Reader) ([]dispatcher.IDEntry, error) {
	var in io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	return parseIDCSV(in)
}

func parseIDCSV(in io.Reader) ([]dispatcher.IDEntry, error) {
	r := csv.NewReader(in)
	r.FieldsPerRecord = 3
	head, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if strings.Join(head, ",") != "object,id_key,crm_id" {
		return nil, errors.New(`header must be "object,id_key,crm_id"`)
	}
	var out []dispatcher.IDEntry
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		line, _ := r.FieldPos(0)
		if err := errors.Join(dispatcher.CheckIDEntry(rec[0], rec[1], rec[2]), emptyID(rec[2])); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if len(out) == maxImportRows {
			return nil, fmt.Errorf("more than %d rows: split the file", maxImportRows)
		}
		out = append(out, dispatcher.IDEntry{Object: rec[0], IDKey: rec[1], CRMID: rec[2]})
	}
}
