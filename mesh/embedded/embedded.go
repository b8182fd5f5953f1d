// Package embedded starts an in-process nats-server with JetStream, for the
// default single-binary run and for tests.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures the embedded server.
type Config struct {
	// Listen is the loopback host:port clients (and the nats CLI) connect
	// to. Port -1 picks a free port. Default "127.0.0.1:4250".
	Listen string `yaml:"listen"`
	// StoreDir is the JetStream file store directory (data_dir/jetstream by default).
	StoreDir string `yaml:"store_dir"`
	// SyncAlways fsyncs every write: safe against a machine crash on a
	// single node, about 7k msgs/s. Default false (fsync every 2 minutes;
	// a process crash loses nothing, a power loss may lose the last ones).
	SyncAlways bool `yaml:"sync_always"`
	// MaxStore caps JetStream file storage in bytes; 0 lets the server choose.
	MaxStore int64 `yaml:"max_store"`
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:4250"
	}
	return c
}

// Validate names the first bad key.
func (c Config) Validate() error {
	if _, _, err := c.hostPort(); err != nil {
		return fmt.Errorf("nats.embedded.listen: %w", err)
	}
	if c.StoreDir == "" {
		return errors.New("nats.embedded.store_dir: required")
	}
	return nil
}

func (c Config) hostPort() (string, int, error) {
	h, p, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	return h, n, nil
}

// Start runs the server and waits until it accepts connections.
func Start(c Config) (*server.Server, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	host, port, _ := c.hostPort()
	opts := &server.Options{
		ServerName: "sluice-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   c.StoreDir,
		SyncAlways: c.SyncAlways,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	if c.MaxStore > 0 {
		opts.JetStreamMaxStore = c.MaxStore
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats-server did not start listening on %s (port in use?)", c.Listen)
	}
	return s, nil
}
