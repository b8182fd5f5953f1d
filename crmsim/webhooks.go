package crmsim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Webhook profiles.
const (
	// WebhookProfileNone sends no webhooks (the default).
	WebhookProfileNone = ""
	// WebhookProfileBareRecords behaves like the real CRM of issue 13: each
	// delivery is a JSON array of bare lead records ({"id": "<lead id>",
	// "status": …}) with only the changed fields, no type, no version, no
	// delivery id; record ids repeat with new content (also inside one
	// delivery); every 5th delivery is sent twice (a retry); the body is
	// signed base64("<webhook id>:" + raw HMAC-SHA256(secret, body)) in
	// X-CRM-Signature, the webhook id in X-CRM-Webhook-Id.
	WebhookProfileBareRecords = "bare-records"
)

// Webhook headers of the bare-records profile.
const (
	HeaderCRMSignature = "X-CRM-Signature"
	HeaderCRMWebhookID = "X-CRM-Webhook-Id"
)

// WebhookConfig configures the simulator's outgoing webhooks (YAML
// "simulator.webhooks").
type WebhookConfig struct {
	// Profile is "" (none) or "bare-records".
	Profile string `yaml:"profile" json:"profile"`
	// Interval between deliveries. Default 1s.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// Secret signs the bodies. Required with a profile (the demo sets one).
	Secret string `yaml:"secret" json:"-"`
	// WebhookID is the CRM's id of the webhook subscription, embedded in
	// the signature. Default "hook-1".
	WebhookID string `yaml:"webhook_id" json:"webhook_id"`
	// Leads is how many lead ids (1..Leads) the records use. Default 60.
	Leads int `yaml:"leads" json:"leads"`
	// Seed seeds the record generator. Default 0 (fixed).
	Seed uint64 `yaml:"seed" json:"seed"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c WebhookConfig) WithDefaults() WebhookConfig {
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.WebhookID == "" {
		c.WebhookID = "hook-1"
	}
	if c.Leads == 0 {
		c.Leads = 60
	}
	return c
}

// Validate reports every invalid field, named by its config key.
func (c WebhookConfig) Validate() error {
	var errs []error
	switch c.Profile {
	case WebhookProfileNone:
		return nil
	case WebhookProfileBareRecords:
	default:
		errs = append(errs, fmt.Errorf("simulator.webhooks.profile: %q is not empty or %q", c.Profile, WebhookProfileBareRecords))
	}
	if c.Secret == "" {
		errs = append(errs, errors.New("simulator.webhooks.secret: required with a profile"))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("simulator.webhooks.interval: %s must be > 0", c.Interval))
	}
	if c.Leads < 1 {
		errs = append(errs, fmt.Errorf("simulator.webhooks.leads: %d must be >= 1", c.Leads))
	}
	return errors.Join(errs...)
}

// LeadStatuses are the statuses the bare-records profile sends.
var LeadStatuses = []string{"new", "contacted", "test_drive_scheduled", "negotiating", "won", "lost"}

// BareRecords returns delivery n of the bare-records profile (the same n
// and seed always give the same body): 1-3 lead records, each with the id
// and only some fields; a record id may appear twice with new content.
func BareRecords(seed uint64, n, leads int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	count := 1 + r.IntN(3)
	recs := make([]map[string]any, 0, count)
	for i := 0; i < count; i++ {
		id := 1 + r.IntN(leads)
		if i > 0 && r.IntN(3) == 0 {
			id, _ = strconv.Atoi(recs[i-1]["id"].(string)) // the same record again, new content
		}
		rec := map[string]any{"id": strconv.Itoa(id)}
		switch r.IntN(3) {
		case 0:
			rec["status"] = LeadStatuses[r.IntN(len(LeadStatuses))]
		case 1:
			rec["status"] = LeadStatuses[r.IntN(len(LeadStatuses))]
			rec["modified_by"] = "agent.priya"
		default:
			rec["description"] = fmt.Sprintf("call note %d", n) // no status: must not null it
		}
		recs = append(recs, rec)
	}
	b, _ := json.Marshal(recs)
	return b
}

// SignBareRecords returns the X-CRM-Signature value of body:
// base64("<webhook id>:" + raw HMAC-SHA256(secret, body)).
func SignBareRecords(secret, webhookID string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(append([]byte(webhookID+":"), m.Sum(nil)...))
}

// WebhookSender posts the profile's webhooks to a receiver until stopped.
type WebhookSender struct {
	cfg    WebhookConfig
	url    func() string
	log    zerolog.Logger
	client *http.Client

	sent, failed atomic.Uint64
	cancel       context.CancelFunc
	wg           sync.WaitGroup
}

// NewWebhookSender checks cfg (after defaults); url gives the receiver's
// endpoint ("" skips a tick, e.g. before it listens).
func NewWebhookSender(cfg WebhookConfig, url func() string, log zerolog.Logger) (*WebhookSender, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Profile == WebhookProfileNone {
		return nil, errors.New("crmsim: no webhook profile configured")
	}
	return &WebhookSender{cfg: cfg, url: url, log: log, client: &http.Client{Timeout: 10 * time.Second}}, nil
}

// Start begins sending in the background.
func (w *WebhookSender) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.loop(ctx)
	}()
	return nil
}

// Stop ends the loop after the request in flight.
func (w *WebhookSender) Stop(ctx context.Context) error {
	if w.cancel == nil {
		return nil
	}
	w.cancel()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sent and Failed count deliveries answered 2xx and not (or not answered).
func (w *WebhookSender) Sent() uint64   { return w.sent.Load() }
func (w *WebhookSender) Failed() uint64 { return w.failed.Load() }

func (w *WebhookSender) loop(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		u := w.url()
		if u == "" {
			continue
		}
		body := BareRecords(w.cfg.Seed, n, w.cfg.Leads)
		for try := 0; try < 1+boolInt(n%5 == 0); try++ {
			err := w.post(ctx, u, body)
			switch {
			case err != nil && ctx.Err() != nil:
				return // stopped mid-request
			case err != nil:
				w.failed.Add(1)
				w.log.Warn().Err(err).Msg("simulator webhook not accepted")
			default:
				w.sent.Add(1)
			}
		}
	}
}

func (w *WebhookSender) post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderCRMWebhookID, w.cfg.WebhookID)
	req.Header.Set(HeaderCRMSignature, SignBareRecords(w.cfg.Secret, w.cfg.WebhookID, body))
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("receiver answered %d", resp.StatusCode)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
