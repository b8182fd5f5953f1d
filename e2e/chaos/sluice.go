package chaos

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"sluice.dev/mesh/productdb"
	"sluice.dev/schemas"
)

// services are the Sluice targets, one `sluice run --target` process each.
var services = []string{"ingest", "enricher", "dispatcher", "inbound", "watchdog"}

// chaosDB is the PostgreSQL database the suite creates (and drops first).
const chaosDB = "sluice_chaos"

// prepareDB creates chaosDB on the server of baseDSN with the sample
// marketplace (customers 1..customers) and the inbound sample's table, and
// returns the DSN of chaosDB with its host:port replaced by hostPort (the
// proxy the suite cuts for the database outage).
func prepareDB(ctx context.Context, baseDSN string, customers int, hostPort string) (string, error) {
	admin, err := productdb.Open(ctx, productdb.Config{Driver: "postgres", DSN: baseDSN})
	if err != nil {
		return "", err
	}
	defer admin.Close()
	for _, q := range []string{"DROP DATABASE IF EXISTS " + chaosDB + " WITH (FORCE)", "CREATE DATABASE " + chaosDB} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			return "", fmt.Errorf("%s: %w", q, err)
		}
	}
	u, err := url.Parse(baseDSN)
	if err != nil {
		return "", err
	}
	u.Path = "/" + chaosDB
	db, err := productdb.Open(ctx, productdb.Config{Driver: "postgres", DSN: u.String()})
	if err != nil {
		return "", err
	}
	defer db.Close()
	// The sample scripts are SQLite's; the same two rewrites as
	// deploy/postgres/initdb/10-sluice-sample.sh make them PostgreSQL's.
	var script strings.Builder
	for _, line := range strings.Split(schemas.MarketplaceSeed()+"\n"+schemas.InboundSetup(), "\n") {
		if strings.HasPrefix(line, "PRAGMA ") {
			continue
		}
		script.WriteString(strings.Replace(line, "INSERT OR IGNORE INTO ", "INSERT INTO ", 1) + "\n")
	}
	if err := productdb.ExecScript(ctx, db, script.String()); err != nil {
		return "", fmt.Errorf("seed: %w", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO customers (id, name, email, phone, city, created_at)
		SELECT i, 'Customer ' || i, 'c' || i || '@example.com', '+91 90000 ' || lpad(i::text, 5, '0'), 'Pune', '2026-01-01T00:00:00Z'
		FROM generate_series(1, $1::int) AS i ON CONFLICT (id) DO NOTHING`, customers); err != nil {
		return "", fmt.Errorf("customers: %w", err)
	}
	u.Host = hostPort
	return u.String(), nil
}

// sluiceConfig is the one config file every service process reads; each
// process gets its own data_dir and ops address from the environment.
func sluiceConfig(o options, dsn, crmURL string, ingestPort, inboundPort int) (string, error) {
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	return fmt.Sprintf(`# written by the chaos suite (e2e/chaos)
log: {level: info, format: json}
nats:
  url: %q
topology:
  partitions: %d
  replicas: 3
  # Recovery after kill -9 is bounded by these (see docs/configuration.md).
  ack_wait: 10s
  pinned_ttl: 3s
ingest:
  http_addr: "127.0.0.1:%d"
enricher:
  db: {driver: postgres, dsn: %q}
  retry_max: 1s
dispatcher:
  # Retry, step-aside and circuit: the shipped defaults (a request tried
  # in place, then its key stepped aside; a CRM that is down opens the
  # circuit and pauses the lane), which must carry 30%% random 5xx.
  crm: {url: %q, timeout: 5s}
  inline: %t
inbound:
  http_addr: "127.0.0.1:%d"
  sources:
    - name: crm
      scheme: standard-webhooks
      secrets: ["whsec_%s"]
  db: {driver: postgres, dsn: %q}
demo: {enabled: "false"}
progress_interval: 10s
`, clientURLs(o.nodes), o.partitions, ingestPort, dsn, crmURL, o.inline, inboundPort,
		base64.StdEncoding.EncodeToString(secret), dsn), nil
}

// checkConfig runs `sluice config check` for every target, so a config
// the binary refuses fails the suite at once with sluice's own message.
func checkConfig(bin, config string) error {
	for _, target := range services {
		out, err := exec.Command(bin, "config", "check", "--config", config, "--target", target).CombinedOutput()
		if err != nil {
			return fmt.Errorf("sluice config check --target %s: %v\n%s", target, err, out)
		}
	}
	return nil
}

// startServices starts one process per target and waits for each to be
// ready (its ops listener's /readyz): the first alone (it creates the
// streams on the new cluster), then the others together.
func startServices(s *suite) error {
	for i, target := range services {
		port, err := freePort()
		if err != nil {
			return err
		}
		dataDir := filepath.Join(s.dir, "data-"+target)
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return err
		}
		p := s.newProc(target, []string{s.sluice, "run", "--target", target, "--config", s.config},
			[]string{"SLUICE_OPS_ADDR=127.0.0.1:" + itoa(port), "SLUICE_DATA_DIR=" + dataDir})
		s.svc[target] = p
		s.ops[target] = fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := p.start(); err != nil {
			return err
		}
		if i == 0 {
			if err := s.waitService(target); err != nil {
				return err
			}
		}
	}
	for _, target := range services[1:] {
		if err := s.waitService(target); err != nil {
			return err
		}
	}
	return nil
}

// waitService waits for target's /readyz.
func (s *suite) waitService(target string) error {
	return waitHTTP(s.ops[target]+"/readyz", s.svc[target], 2*time.Minute)
}
