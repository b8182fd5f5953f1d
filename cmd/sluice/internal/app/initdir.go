package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// initFiles are what `sluice init DIR` writes, by path under DIR. "{{DIR}}"
// is replaced by DIR's absolute path (config paths are relative to the
// working directory, not to the file).
var initFiles = map[string]string{
	"sluice.yaml": `# Written by sluice init. Run it with
#   sluice run --config {{DIR}}/sluice.yaml
# Every key: docs/configuration.md. Check it (and run the mapping tests in
# schemas/tests/) with
#   sluice config check --config {{DIR}}/sluice.yaml
data_dir: {{DIR}}/data

catalog:
  schemas_dir: {{DIR}}/schemas
  # Keep the sample marketplace types (and their demo producer and SQLite
  # sample database) next to yours; set false to run your types alone.
  include_sample: true
  types:
    # Your first type. Send one with
    #   curl -s -XPOST localhost:8080/v1/events -H 'content-type: application/json' \
    #     --data-binary @{{DIR}}/events/ticket_opened.json
    # and see what the CRM would get, sending nothing, with
    #   sluice try --config {{DIR}}/sluice.yaml {{DIR}}/events/ticket_opened.json
    ticket_opened:
      # The ordering key when the producer sends none: every event of one
      # ticket reaches the CRM in order.
      key: '"ticket:" + (.data.ticket_id|tostring)'
      lookups:
        # The customer row from the product database (the sample's SQLite
        # here), if there is one.
        - name: customer
          table: customers
          key_column: id
          columns: [name, city]
          from: .data.customer_id
          optional: true
      body: |
        {
          subject: .event.data.subject,
          priority: (.event.data.priority // "normal"),
          customer_name: .lookups.customer.name,
          customer_city: .lookups.customer.city,
          external_id: ("ticket:" + (.event.data.ticket_id|tostring)),
          opened_at: .event.occurred_at
        }
      crm:
        object: tickets
        mode: create          # POST once, remember the CRM's id
        method: POST
        path: /api/tickets
        id_from: .id          # the CRM answers {"id": "..."}

# No dispatcher.crm.url: the built-in CRM simulator receives the requests
# (http://127.0.0.1:8099/_sim/records lists them). Point it at your CRM with
#   dispatcher:
#     crm: {url: https://crm.example.com}
`,
	"schemas/ticket_opened.json": `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "ticket_opened: a customer opened a support ticket",
  "type": "object",
  "required": ["ticket_id", "subject"],
  "properties": {
    "ticket_id": {"type": "integer", "minimum": 1},
    "customer_id": {"type": "integer", "minimum": 1},
    "subject": {"type": "string", "minLength": 1, "maxLength": 200},
    "priority": {"enum": ["low", "normal", "high"]}
  },
  "additionalProperties": false
}
`,
	"schemas/tests/ticket_opened.yaml": `# Mapping tests: sluice config check runs every file of this directory and
# shows a diff when the request differs. A list of {name, event, expect}.
- name: a ticket of a known customer
  event:
    id: test-1
    type: ticket_opened
    occurred_at: "2026-12-01T10:00:00Z"
    data: {ticket_id: 1, customer_id: 1, subject: "Car not delivered", priority: high}
  expect:
    method: POST
    path: /api/tickets
    body:
      subject: Car not delivered
      priority: high
      customer_name: Aarav Menon
      customer_city: Bengaluru
      external_id: "ticket:1"
      opened_at: "2026-12-01T10:00:00Z"
`,
	"events/ticket_opened.json": `{"id": "ticket-1-opened", "type": "ticket_opened", "source": "curl",
 "occurred_at": "2026-12-01T10:00:00Z",
 "data": {"ticket_id": 1, "customer_id": 1, "subject": "Car not delivered", "priority": "high"}}
`,
}

func initCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "init DIR",
		Short: "Write a starter config with one example event type of your own into DIR",
		Long: "Writes DIR/sluice.yaml (your type next to the sample marketplace, the CRM simulator as the\n" +
			"receiver), DIR/schemas/ticket_opened.json (its JSON Schema), DIR/schemas/tests/ (a mapping\n" +
			"test `sluice config check` runs) and DIR/events/ (an example event). Existing files are\n" +
			"never overwritten.",
		Example: "  sluice init mycrm && sluice run --config mycrm/sluice.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			for name := range initFiles {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					return fmt.Errorf("%s exists: sluice init never overwrites a file", filepath.Join(dir, name))
				} else if !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			for name, text := range initFiles {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(p, []byte(strings.ReplaceAll(text, "{{DIR}}", dir)), 0o644); err != nil {
					return err
				}
			}
			cfg := filepath.Join(dir, "sluice.yaml")
			fmt.Fprintf(cmd.OutOrStdout(), `wrote %[1]s, its schema and mapping test under %[2]s/schemas, an event in %[2]s/events.
Next:
  sluice config check --config %[1]s                 # validate, run the mapping tests
  sluice try --config %[1]s %[2]s/events/ticket_opened.json   # the CRM request, sending nothing
  sluice run --config %[1]s                          # everything, the CRM simulator as the CRM
  curl -s -XPOST localhost:8080/v1/events -H 'content-type: application/json' --data-binary @%[2]s/events/ticket_opened.json
  curl -s localhost:8099/_sim/records                # what the "CRM" received
  open http://127.0.0.1:9090/                        # the status page
`, cfg, dir)
			return nil
		},
	}
}
