package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/embedded"
	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

// bus is the NATS side of a run: the embedded server (if any) and a way to
// open one connection per service.
type bus struct {
	srv   *server.Server
	cfg   NATSConfig
	url   string
	log   zerolog.Logger
	conns []*nats.Conn
}

func openBus(c Config, log zerolog.Logger) (*bus, error) {
	b := &bus{cfg: c.NATS, url: c.NATS.URL, log: log}
	if b.url == "" {
		s, err := embedded.Start(c.NATS.Embedded)
		if err != nil {
			return nil, err
		}
		b.srv = s
		b.url = s.ClientURL()
		log.Info().Str("url", b.url).Str("store", c.NATS.Embedded.StoreDir).
			Msgf("embedded NATS JetStream is listening; inspect it with: nats -s %s stream ls", b.url)
	}
	return b, nil
}

// pingInterval and maxPingsOut bound how long a connection stays with a
// server that stopped answering: about pingInterval x (maxPingsOut+1).
var (
	pingInterval = 5 * time.Second
	maxPingsOut  = 2
)

// connect opens a connection named for a service, with the credentials,
// TLS and inbox prefix of nats.* (natsOptions). With the embedded server the
// connection is in-process (no TCP); it reconnects forever.
func (b *bus) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := natsOptions(b.cfg, name, logAsyncErr(b.log, name))
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// A server cut off by a partition keeps its TCP connections open
		// and silent: without a short ping the client would wait for the
		// cut to heal (nats.go's default notices after 4-6 minutes). With
		// these it moves to another URL of nats.url after ~15 s.
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn().Err(err).Str("conn", name).Msg("NATS disconnected; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { b.log.Info().Str("conn", name).Msg("NATS reconnected") }),
	)
	if b.srv != nil {
		opts = append(opts, nats.InProcessServer(b.srv))
	}
	nc, err := nats.Connect(b.url, opts...)
	if err != nil {
		return nil, nil, connectError(b.url, err, "")
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(10*time.Second),
		jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	b.conns = append(b.conns, nc)
	return nc, js, nil
}

// close drains every connection (pending acks and publishes are flushed)
// and then stops the embedded server.
func (b *bus) close() {
	for _, nc := range b.conns {
		_ = nc.Drain()
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, nc := range b.conns {
		for !nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// loadCatalog compiles the configured types, or the embedded sample
// marketplace when none are configured; with catalog.include_sample the
// sample types are added to the configured ones (which win on a name).
func loadCatalog(c catalog.Config) (*catalog.Catalog, error) {
	var schemaFS fs.FS = schemas.Marketplace()
	if usesSample(c) {
		var sample catalog.Config
		if err := yaml.Unmarshal(schemas.MarketplaceCatalog(), &sample); err != nil {
			return nil, fmt.Errorf("embedded sample catalog: %w", err)
		}
		types := sample.Types
		for name, t := range c.Types {
			types[name] = t
		}
		c.Types = types
		if c.SchemasDir != "" {
			// The directory's schemas first, then the sample's in the binary.
			return catalog.Compile(c, layeredFS{os.DirFS(c.SchemasDir), schemaFS})
		}
	}
	return catalog.Compile(c, c.SchemaFS(schemaFS))
}

// usesSample reports whether the sample marketplace types are in the
// catalog: no types configured, or catalog.include_sample.
func usesSample(c catalog.Config) bool { return len(c.Types) == 0 || c.IncludeSample }

// layeredFS opens a file from the first file system that has it.
type layeredFS []fs.FS

func (l layeredFS) Open(name string) (fs.File, error) {
	var first error
	for _, f := range l {
		file, err := f.Open(name)
		if err == nil {
			return file, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

func ensureTopology(ctx context.Context, js jetstream.JetStream, names topology.Names, log zerolog.Logger) error {
	return whenReady(ctx, log, "topology", startWait, func(ctx context.Context) error { return names.Ensure(ctx, js) })
}

// readyWait is how long the start waits for JetStream to answer (Limit, a
// cluster still electing its leaders, a node restarting) and how long one
// try may take (TryFor).
type readyWait struct{ Limit, TryFor time.Duration }

// startWait is sluice run's: 2 minutes, 15 s per try.
var startWait = readyWait{Limit: 2 * time.Minute, TryFor: 15 * time.Second}

// busRetry is the wait between two tries: 250ms, doubling up to 5 s.
var busRetry = retry.Policy{Delay: 250 * time.Millisecond, Max: 5 * time.Second}

// whenReady runs try (one attempt, w.TryFor at most) until it succeeds,
// fails for good, ctx ends or w.Limit has passed. JetStream that does not
// answer yet (a timeout, no responders, a 503 "temporarily unavailable") is
// waited for, with a warning per try; any other error is returned at once.
// The chaos suite's ingest exited at start ("look up stream SLUICE_EVENTS:
// context deadline exceeded") while its cluster formed.
func whenReady(ctx context.Context, log zerolog.Logger, what string, w readyWait, try func(context.Context) error) error {
	deadline := time.Now().Add(w.Limit)
	for failures := 0; ; failures++ {
		tctx, cancel := context.WithTimeout(ctx, w.TryFor)
		err := try(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || !busNotReady(err) {
			return err
		}
		wait := busRetry.Backoff(failures)
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%s: JetStream did not answer within %s: %w", what, w.Limit, err)
		}
		log.Warn().Err(err).Dur("retry_in", wait).Msg(what + ": JetStream is not ready yet; waiting")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// jsErrNoPeers is nats-server's "no suitable peers for placement" (a
// replicated stream created while peers are offline).
const jsErrNoPeers jetstream.ErrorCode = 10005

// busNotReady reports whether err means JetStream did not answer yet, or
// cannot place a replicated stream while peers are offline, as opposed to
// an answer that will not change (a refused config, a changed partition
// count). A cluster with too few nodes for topology.replicas looks the same
// as one whose peers are still starting: it is waited for, with the
// server's reason in each warning, and then fails.
func busNotReady(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == http.StatusServiceUnavailable || apiErr.ErrorCode == jsErrNoPeers
	}
	return false
}
