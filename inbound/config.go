package inbound

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
)

// Config configures the inbound service (YAML section "inbound").
type Config struct {
	// HTTPAddr is where the webhook receiver listens. Default "127.0.0.1:8081".
	HTTPAddr string `yaml:"http_addr"`
	// Path is the webhook endpoint of a single source. Default
	// "/v1/crm/webhooks". With several sources each one's path defaults to
	// <path>/<source name>.
	Path string `yaml:"path"`
	// Sources are the CRMs allowed to post, each with its signature scheme
	// and secrets. At least one is required.
	Sources []Source `yaml:"sources"`
	// Tolerance is how far a signed timestamp may be from now, either way.
	// Default 5m.
	Tolerance time.Duration `yaml:"tolerance"`
	// MaxBodyBytes caps a request body; larger ones get 413. Default 1 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxItems caps the items of a batch body; more get 413. Default 500.
	MaxItems int `yaml:"max_items"`
	// PublishTimeout bounds storing one request's items in JetStream;
	// beyond it the CRM gets 503 and retries. Default 5s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// DB is the database webhooks are written to (the caller opens it with
	// productdb.Open and passes it in Deps.DB). Driver default sqlite.
	DB productdb.Config `yaml:"db"`
	// AppliedTable records every settled webhook id (exactly-once).
	// Default "sluice_inbound_applied".
	AppliedTable string `yaml:"applied_table"`
	// VersionsTable keeps each entity's last applied version and content
	// hash (stale-update guard, loop prevention). Default
	// "sluice_inbound_versions".
	VersionsTable string `yaml:"versions_table"`
	// RetryMin and RetryMax bound the backoff while the database is
	// unavailable; the lane holds and retries forever. Defaults 200ms, 10s.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// QueryTimeout bounds the jq expressions of one item (key, checks,
	// version, columns: a runaway expression is cut off and the item
	// parked) and each check query. Keep it below topology.ack_wait.
	// Default 10s.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// CatalogFile is a YAML file with the webhook types ("types:" map).
	// Types (inline) wins when both are set. Both empty: the embedded
	// sample CRM (schemas.InboundCatalog).
	CatalogFile string `yaml:"catalog_file"`
	// SchemasDir holds the types' JSON Schemas. Empty: the embedded sample
	// schemas (schemas.Inbound).
	SchemasDir string `yaml:"schemas_dir"`
	// Types are the webhook types, inline.
	Types map[string]Type `yaml:"types"`
}

// Source is one CRM that posts webhooks.
type Source struct {
	// Name identifies the source in dedupe ids, headers and logs. Default
	// "crm". [A-Za-z0-9_-], at most 64 characters.
	Name string `yaml:"name"`
	// Path of this source's endpoint (see Config.Path for the default).
	Path string `yaml:"path"`
	// Scheme is the signature scheme: "standard-webhooks" (default), a
	// preset ("hmac-sha256", "github", "stripe", "slack", "shopify",
	// "zendesk", "hubspot-v3", "twilio", "svix"), "hmac" (declarative:
	// everything from Signature), "basic", "header-token", or a name
	// added with RegisterScheme.
	Scheme string `yaml:"scheme"`
	// Secrets verify signatures; any one matching is enough, so a secret
	// is rotated by adding the new one, then removing the old. Standard
	// Webhooks secrets are "whsec_<base64>"; others are used as raw bytes.
	// Never logged.
	Secrets []string `yaml:"secrets"`
	// Header carries the signature (hmac-sha256). Default "X-Signature".
	Header string `yaml:"header"`
	// Encoding of the hmac-sha256 signature: "hex" (default) or "base64".
	Encoding string `yaml:"encoding"`
	// Prefix before the signature value, e.g. "sha256=" (hmac-sha256).
	Prefix string `yaml:"prefix"`
	// IDHeader names a header with the delivery id, used when a single
	// item has no "id" (hmac-sha256). Optional.
	IDHeader string `yaml:"id_header"`
	// Signature is the declarative signature scheme (scheme "hmac"), or
	// overrides of a preset's fields (scheme "stripe", "github", …). For
	// basic and header-token only header, prefix and id_header apply.
	Signature Signature `yaml:"signature"`
	// Envelope maps the source's bodies to items (type, dedupe id, key,
	// version). Nil: the default {type, id, …} shape.
	Envelope *Envelope `yaml:"envelope"`
}

// Defaults.
const (
	DefaultHTTPAddr      = "127.0.0.1:8081"
	DefaultPath          = "/v1/crm/webhooks"
	DefaultAppliedTable  = "sluice_inbound_applied"
	DefaultVersionsTable = "sluice_inbound_versions"
)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.Tolerance == 0 {
		c.Tolerance = 5 * time.Minute
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxItems == 0 {
		c.MaxItems = 500
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.DB.Driver == "" {
		c.DB.Driver = productdb.DriverSQLite
	}
	if c.AppliedTable == "" {
		c.AppliedTable = DefaultAppliedTable
	}
	if c.VersionsTable == "" {
		c.VersionsTable = DefaultVersionsTable
	}
	def, _ := topology.SpecOf(topology.StageInbound)
	if c.RetryMin == 0 {
		c.RetryMin = def.Retry.Delay
	}
	if c.RetryMax == 0 {
		c.RetryMax = def.Retry.Max
	}
	if c.QueryTimeout == 0 {
		c.QueryTimeout = 10 * time.Second
	}
	srcs := make([]Source, len(c.Sources))
	for i, s := range c.Sources {
		if s.Name == "" {
			s.Name = "crm"
		}
		if s.Path == "" {
			s.Path = c.Path
			if len(c.Sources) > 1 {
				s.Path = strings.TrimRight(c.Path, "/") + "/" + s.Name
			}
		}
		if s.Scheme == "" {
			s.Scheme = SchemeStandardWebhooks
		}
		if s.Scheme == SchemeHMACSHA256 {
			if s.Header == "" {
				s.Header = "X-Signature"
			}
			if s.Encoding == "" {
				s.Encoding = "hex"
			}
		}
		srcs[i] = s
	}
	c.Sources = srcs
	return c
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate reports every invalid field, named by its config key.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("inbound.http_addr: %q: %w", c.HTTPAddr, err))
	}
	if !strings.HasPrefix(c.Path, "/") {
		errs = append(errs, fmt.Errorf("inbound.path: %q must start with /", c.Path))
	}
	if len(c.Sources) == 0 {
		errs = append(errs, errors.New("inbound.sources: at least one source is required"))
	}
	seenName, seenPath := map[string]bool{}, map[string]bool{}
	for i, s := range c.Sources {
		key := fmt.Sprintf("inbound.sources[%d]", i)
		if !nameRe.MatchString(s.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q must match [A-Za-z0-9_-]{1,64}", key, s.Name))
		}
		if seenName[s.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", key, s.Name))
		}
		if seenPath[s.Path] {
			errs = append(errs, fmt.Errorf("%s.path: %q is used twice", key, s.Path))
		}
		seenName[s.Name], seenPath[s.Path] = true, true
		if !strings.HasPrefix(s.Path, "/") {
			errs = append(errs, fmt.Errorf("%s.path: %q must start with /", key, s.Path))
		}
		if _, err := NewVerifier(s, c.Tolerance); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		if _, err := compileEnvelope(s.Envelope); err != nil {
			errs = append(errs, fmt.Errorf("%s.%w", key, err))
		}
	}
	if c.Tolerance < time.Second {
		errs = append(errs, fmt.Errorf("inbound.tolerance: %s must be at least 1s", c.Tolerance))
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("inbound.max_body_bytes: %d must be at least 1024", c.MaxBodyBytes))
	}
	if c.MaxItems < 1 {
		errs = append(errs, fmt.Errorf("inbound.max_items: %d must be >= 1", c.MaxItems))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, fmt.Errorf("inbound.publish_timeout: %s must be > 0", c.PublishTimeout))
	}
	if _, err := productdb.DialectFor(c.DB.Driver); err != nil {
		errs = append(errs, fmt.Errorf("inbound.db.driver: %q is not sqlite, postgres or mysql", c.DB.Driver))
	}
	if strings.TrimSpace(c.DB.DSN) == "" {
		errs = append(errs, errors.New("inbound.db.dsn: required"))
	}
	for key, t := range map[string]string{"inbound.applied_table": c.AppliedTable, "inbound.versions_table": c.VersionsTable} {
		if !validIdent(t) {
			errs = append(errs, fmt.Errorf("%s: %q is not an identifier ([A-Za-z_][A-Za-z0-9_]*)", key, t))
		}
	}
	if c.QueryTimeout <= 0 {
		errs = append(errs, fmt.Errorf("inbound.query_timeout: %s must be > 0", c.QueryTimeout))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("inbound.retry_min/retry_max: need 0 < retry_min (%s) <= retry_max (%s)", c.RetryMin, c.RetryMax))
	}
	return errors.Join(errs...)
}

// retryPolicy is the writer's retry policy while the database is
// unavailable: retry_min doubling to retry_max; the lane holds, never parks.
func (c Config) retryPolicy() retry.Policy {
	return retry.Policy{Delay: c.RetryMin, Max: c.RetryMax}
}
