package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"sluice.dev/mesh/crmreq"
)

const (
	// maxResponse is how much of a CRM response body is read.
	maxResponse = 1 << 20
	// maxParkedResponse is how much of it a parked message carries.
	maxParkedResponse = 2 << 10
	userAgent         = "sluice/0.1"
)

// Headers the dispatcher sets on parked messages, next to lane's
// Sluice-Park-* headers.
const (
	HeaderCRMStatus   = "Sluice-Crm-Status"
	HeaderCRMResponse = "Sluice-Crm-Response"
)

// crmClient sends requests to the CRM over one shared keep-alive transport.
type crmClient struct {
	base      string
	timeout   time.Duration
	headers   http.Header
	client    *http.Client
	transport *http.Transport // owned by us; nil when the caller gave a client
	auth      authorizer      // nil: no auth beyond headers
	lim       *limiter        // nil: no rate limit
}

func newCRMClient(cfg CRMConfig, client *http.Client, idleConns int) *crmClient {
	c := &crmClient{
		base:    strings.TrimRight(cfg.URL, "/"),
		timeout: cfg.Timeout,
		headers: http.Header{},
		client:  client,
	}
	for k, v := range cfg.Headers {
		c.headers.Set(k, v)
	}
	if c.client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = max(100, idleConns)
		t.MaxIdleConnsPerHost = idleConns
		t.IdleConnTimeout = 90 * time.Second
		c.transport = t
		c.client = &http.Client{
			Transport: t,
			// A redirect would turn a POST into a GET on another URL: the
			// answer is taken as is (3xx counts as a failure).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	c.auth = newAuthorizer(cfg, &http.Client{Transport: c.client.Transport, Timeout: cfg.Timeout})
	c.lim = newLimiter(cfg.RateLimit)
	return c
}

func (c *crmClient) close() {
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
}

// response is what came back from one CRM request.
type response struct {
	Status int
	Header http.Header
	Body   []byte
	// Err is set when no complete answer came (wraps ErrCRMUnreachable).
	Err error
	// Timeout tells a timeout from other transport errors.
	Timeout bool
	// NotSent: the request never left (rate-limit wait or token fetch
	// failed), so it cannot have had an effect at the CRM.
	NotSent bool
	// Took is the time from sending the request to the end of the body.
	Took time.Duration
	// Probe: the answer came to the paused lane's probe (probeAnswers).
	Probe bool
}

// do sends one request. The returned error means the request could not
// even be built (the caller parks); transport failures are in response.Err.
//
// With auth, a 401 answer replaces the credential once (an OAuth2 token
// expired or revoked) and sends the request again: the CRM refused it
// before doing anything. With a rate limit, do waits for its turn first.
func (c *crmClient) do(ctx context.Context, r crmreq.Request, method, path string) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	for try := 0; ; try++ {
		out, authz, err := c.once(ctx, r, method, path)
		if err == nil && out.Err == nil && out.Status == http.StatusUnauthorized && authz != "" && try == 0 &&
			c.auth.rejected(authz) {
			continue
		}
		return out, err
	}
}

// once sends one request; authz is the Authorization value sent.
func (c *crmClient) once(ctx context.Context, r crmreq.Request, method, path string) (out response, authz string, err error) {
	if err := c.lim.wait(ctx); err != nil {
		return response{Err: fmt.Errorf("%w: rate limit wait: %w", ErrCRMUnreachable, err), Timeout: isTimeout(err), NotSent: true}, "", nil
	}
	if c.auth != nil {
		if authz, err = c.auth.header(ctx); err != nil {
			return response{Err: err, Timeout: isTimeout(err), NotSent: true}, "", nil
		}
	}
	var body io.Reader
	if len(r.Body) > 0 {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return response{}, "", fmt.Errorf("%w: build request: %w", ErrUndecodable, err)
	}
	// Never resent by the transport: Go's transport replays a request
	// carrying Idempotency-Key on its own when a reused connection dies
	// before the answer (e.g. a CRM that commits, then cuts the
	// connection), and a CRM that ignores the key would create the record
	// twice behind Sluice's back. The lane retries instead, after crm.find.
	req.GetBody = nil
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", userAgent)
	for k, v := range c.headers {
		h[k] = v
	}
	if authz != "" {
		h.Set("Authorization", authz)
	}
	h.Set("Idempotency-Key", r.EventID)
	h.Set("X-Sluice-Event-Id", r.EventID)
	h.Set("X-Sluice-Key", r.Key)
	h.Set("X-Sluice-Type", r.Type)
	if !r.OccurredAt.IsZero() {
		h.Set("X-Sluice-Occurred-At", r.OccurredAt.UTC().Format(time.RFC3339Nano))
	}
	start := time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		return response{Err: fmt.Errorf("%w: %w", ErrCRMUnreachable, err), Timeout: isTimeout(err), Took: time.Since(start)}, authz, nil
	}
	defer resp.Body.Close()
	if c.lim != nil {
		ra, _ := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		c.lim.observe(resp.StatusCode, ra)
	}
	out = response{Status: resp.StatusCode, Header: resp.Header}
	out.Body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		out.Err = fmt.Errorf("%w: read response: %w", ErrCRMUnreachable, err)
		out.Timeout = isTimeout(err)
	}
	out.Took = time.Since(start)
	return out, authz, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
