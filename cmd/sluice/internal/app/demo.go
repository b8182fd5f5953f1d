package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/inbound"
	"sluice.dev/ingest"
	"sluice.dev/ingest/client"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/topology"
)

// demo is the demo producer of `make run`: rounds of sample-marketplace
// events at demo.rate, sent through ingest's HTTP API when it runs in this
// process (else published to JetStream). Ids are "d<start>:<key>#<n>", n
// counting per key across rounds, so the simulator can check per-key order.
type demo struct {
	cfg DemoConfig
	// webhookURL gives the inbound endpoint (empty: no webhooks); the
	// demo plays the CRM posting signed webhooks back with webhookSecret.
	webhookURL    func() string
	webhookSecret string
	js            jetstream.JetStream
	names         topology.Names
	httpURL       func() string
	// tokens are ingest's producer tokens by name. When ingest requires
	// tokens, a demo sender without one of its own name ("demo",
	// "demo-import") publishes to JetStream directly instead of being
	// refused with 401 for ever.
	tokens map[string]string
	log    zerolog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newDemo(cfg DemoConfig, js jetstream.JetStream, names topology.Names, httpURL func() string, tokens []ingest.Token, log zerolog.Logger) *demo {
	d := &demo{cfg: cfg, js: js, names: names, httpURL: httpURL, log: log}
	if len(tokens) > 0 {
		d.tokens = map[string]string{}
		for _, t := range tokens {
			d.tokens[t.Name] = t.Token
		}
	}
	return d
}

// ingestFor returns ingest's URL and the bearer token for the demo sender
// named source, or "" when that sender publishes to JetStream: ingest does
// not run here, or it requires tokens and none is named source.
func (d *demo) ingestFor(source string) (url, token string) {
	url = d.httpURL()
	if url == "" || d.tokens == nil {
		return url, ""
	}
	token, ok := d.tokens[source]
	if !ok {
		return "", ""
	}
	return url, token
}

// The demo's event sources (and, when ingest requires tokens, the names
// of the tokens it uses).
const (
	demoSource       = "demo"
	demoImportSource = "demo-import"
)

func (d *demo) Start(context.Context) error {
	if d.tokens != nil {
		for _, s := range []string{demoSource, demoImportSource} {
			if _, ok := d.tokens[s]; !ok {
				d.log.Info().Str("token", s).Msg("demo: ingest requires tokens and none has this name; this demo sender publishes to JetStream directly")
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(3)
	go func() {
		defer d.wg.Done()
		d.loop(ctx)
	}()
	go func() {
		defer d.wg.Done()
		d.importSpreadsheet(ctx)
	}()
	go func() {
		defer d.wg.Done()
		d.webhooks(ctx)
	}()
	return nil
}

// Stop ends the current publish; events already acked are in the stream.
func (d *demo) Stop(ctx context.Context) error {
	d.cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *demo) loop(ctx context.Context) {
	run := fmt.Sprintf("d%d", time.Now().Unix())
	counters := map[string]int{}
	var total int
	for round := int64(1); ctx.Err() == nil; round++ {
		keys := min(d.cfg.Keys, 90)
		plan, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 500, Keys: keys, Seed: round, Start: time.Now().UTC(), Spacing: time.Millisecond})
		if err != nil {
			d.log.Error().Err(err).Msg("demo plan")
			return
		}
		for _, ev := range plan.Events {
			counters[ev.Key]++
			ev.ID = fmt.Sprintf("%s:%s#%d", run, strings.ReplaceAll(ev.Key, " ", "_"), counters[ev.Key])
			ev.Source = demoSource
		}
		opts := loadgen.PublishOptions{Rate: d.cfg.Rate}
		var res loadgen.Result
		if u, token := d.ingestFor(demoSource); u != "" {
			if token != "" {
				opts.Header = http.Header{"Authorization": {"Bearer " + token}}
			}
			res, err = loadgen.PublishHTTP(ctx, u, plan.Events, opts)
		} else {
			res, err = loadgen.PublishJetStream(ctx, d.js, d.names, plan.Events, opts)
		}
		total += res.Published
		if err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Int("published", res.Published).Msg("demo round incomplete; next round in 2s")
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
	d.log.Info().Int("published", total).Msg("demo producer stopped")
}

// importSpreadsheet imports the embedded sample spreadsheet once, the way
// `sluice import` does (ids from file and row content: a restart within the
// duplicate window sends nothing twice).
func (d *demo) importSpreadsheet(ctx context.Context) {
	var tr client.Transport = client.NewJetStream(d.js, d.names)
	if u, token := d.ingestFor(demoImportSource); u != "" {
		tr = client.NewHTTP(u, token, &http.Client{Timeout: 10 * time.Second})
	}
	n, err := importSample(ctx, tr)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("demo: sample spreadsheet import failed")
		}
		return
	}
	d.log.Info().Msgf("demo: imported %d rows from %s", n, sampleSpreadsheetName)
}

// webhooks plays the CRM calling back: every 3 s a signed webhook (a lead
// status change or a note) is posted to the inbound endpoint, and now and
// then the same delivery twice (CRMs retry), which inbound deduplicates.
func (d *demo) webhooks(ctx context.Context) {
	if d.webhookURL == nil || d.webhookSecret == "" {
		return
	}
	statuses := []string{"contacted", "test_drive_scheduled", "negotiating", "won", "lost"}
	client := &http.Client{Timeout: 5 * time.Second}
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		u := d.webhookURL()
		if u == "" {
			continue
		}
		now := time.Now().UTC()
		lead := 1 + n%60
		var item map[string]any
		if n%2 == 0 {
			item = map[string]any{"type": "lead_status_changed", "data": map[string]any{"lead_id": lead,
				"status": statuses[n%len(statuses)], "updated_at": now.Format(time.RFC3339), "reason": "demo"}}
		} else {
			item = map[string]any{"type": "note_added", "data": map[string]any{"note_id": fmt.Sprintf("note_demo%d", n),
				"lead_id": lead, "body": "Customer asked for a test drive on Saturday."}}
		}
		id := fmt.Sprintf("wh_demo_%d_%d", now.Unix(), n)
		item["id"], item["occurred_at"] = id, now.Format(time.RFC3339)
		item["actor"] = map[string]any{"kind": "user", "name": "agent.priya"}
		body, _ := json.Marshal(item)
		for try := 0; try < 1+n%4/3; try++ { // every 4th delivery is sent twice
			if err := d.postWebhook(ctx, client, u, id, body); err != nil {
				d.log.Warn().Err(err).Msg("demo webhook")
			}
		}
	}
}

func (d *demo) postWebhook(ctx context.Context, client *http.Client, url, id string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if err := inbound.SignHeaders(req.Header, d.webhookSecret, id, time.Now(), body); err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("inbound answered %d", resp.StatusCode)
	}
	return nil
}
