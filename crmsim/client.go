package crmsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client drives a sim in another process through its /_sim/ control API.
type Client struct {
	// BaseURL is the sim's URL, e.g. "http://127.0.0.1:9900".
	BaseURL string
	// HTTP is the client used; http.DefaultClient when nil.
	HTTP *http.Client
}

// NewClient returns a client for the sim at baseURL.
func NewClient(baseURL string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/")}
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// do sends a control request and decodes a 200 JSON answer into out (when
// out is not nil).
func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%w: %s %s: %s: %s", ErrControl, method, path, resp.Status, bytes.TrimSpace(msg))
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Outage makes the sim answer 503 to everything for d (d <= 0 ends it).
func (c *Client) Outage(ctx context.Context, d time.Duration) error {
	return c.do(ctx, http.MethodPost, "/_sim/outage?for="+url.QueryEscape(d.String()), nil, nil)
}

// Configure applies p and returns the settings in force.
func (c *Client) Configure(ctx context.Context, p ConfigPatch) (Knobs, error) {
	var k Knobs
	err := c.do(ctx, http.MethodPost, "/_sim/config", p, &k)
	return k, err
}

// Reject sets (status 4xx) or removes (status 0) a per-event rejection.
func (c *Client) Reject(ctx context.Context, id string, status int) error {
	q := url.Values{"id": {id}, "status": {strconv.Itoa(status)}}
	return c.do(ctx, http.MethodPost, "/_sim/reject?"+q.Encode(), nil, nil)
}

// Reset clears the sim's records, counters and objects.
func (c *Client) Reset(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/_sim/reset", nil, nil)
}

// Stats returns the sim's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := c.do(ctx, http.MethodGet, "/_sim/stats", nil, &s)
	return s, err
}

// SelfCheck returns the sim's SelfCheck report.
func (c *Client) SelfCheck(ctx context.Context) (Report, error) {
	var r Report
	err := c.do(ctx, http.MethodGet, "/_sim/report", nil, &r)
	return r, err
}

// Check sends the expected ids per key and returns the sim's Report.
func (c *Client) Check(ctx context.Context, expected map[string][]string) (Report, error) {
	var r Report
	err := c.do(ctx, http.MethodPost, "/_sim/check", expected, &r)
	return r, err
}

// Records returns the records from index since on.
func (c *Client) Records(ctx context.Context, since int) ([]Record, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		c.BaseURL+"/_sim/records?since="+strconv.Itoa(since), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%w: GET /_sim/records: %s: %s", ErrControl, resp.Status, bytes.TrimSpace(msg))
	}
	var out []Record
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return out, fmt.Errorf("record %d: %w", len(out), err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}
