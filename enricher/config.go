// Package enricher is Sluice's data-mart stage: it reads accepted events
// from the events stream in per-partition ordered lanes, fetches the rows
// each event's foreign keys point to from the product database, builds the
// CRM body with the type's jq mapping and forwards a crmreq.Request to the
// dispatch stream. A missing row is waited for (lookup_grace) and then
// parked; a database outage holds the lane until the database is back.
package enricher

import (
	"errors"
	"fmt"
	"time"

	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
)

// Config configures the enricher (YAML key "enricher").
type Config struct {
	// DB is the product database the lookups read.
	DB productdb.Config `yaml:"db"`
	// Cache keeps rows found by lookups in memory.
	Cache CacheConfig `yaml:"cache"`
	// LookupGrace is how long a referenced row that is not in the database
	// (yet) is waited for, retrying with backoff, before the event is
	// parked with "lookup missing: <table>/<key>". It covers the race of an
	// event arriving before the product database commits the row it refers
	// to. Measured from when this process first saw the event; the lane
	// holds meanwhile. Negative: park at once. Default 30s.
	LookupGrace time.Duration `yaml:"lookup_grace"`
	// RetryMin and RetryMax bound the exponential backoff between attempts
	// while a row is missing or the database fails. Defaults 200ms and 5s.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// QueryTimeout bounds one lookup query (and the jq mappings of one
	// event); a query that times out is retried like an outage. Keep it
	// below topology.ack_wait. Default 5s.
	QueryTimeout time.Duration `yaml:"query_timeout"`
}

// CacheConfig configures the lookup cache: an LRU of found rows, each kept
// for TTL. Missing rows are never cached. A row changed in the database is
// seen after at most TTL.
type CacheConfig struct {
	// Size is the most rows kept; -1 disables the cache. Default 10000.
	Size int `yaml:"size"`
	// TTL is how long a cached row is used. Default 30s.
	TTL time.Duration `yaml:"ttl"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.DB = c.DB.WithDefaults()
	if c.Cache.Size == 0 {
		c.Cache.Size = 10000
	}
	if c.Cache.TTL == 0 {
		c.Cache.TTL = 30 * time.Second
	}
	if c.LookupGrace == 0 {
		c.LookupGrace = 30 * time.Second
	}
	def, _ := topology.SpecOf(topology.StageEnricher)
	if c.RetryMin == 0 {
		c.RetryMin = def.Retry.Delay
	}
	if c.RetryMax == 0 {
		c.RetryMax = def.Retry.Max
	}
	if c.QueryTimeout == 0 {
		c.QueryTimeout = 5 * time.Second
	}
	return c
}

// Validate reports every invalid field, named by its config key.
func (c Config) Validate() error {
	errs := []error{c.DB.Validate()}
	if c.Cache.Size < -1 {
		errs = append(errs, fmt.Errorf("enricher.cache.size: %d must be >= 1, or -1 to disable the cache", c.Cache.Size))
	}
	if c.Cache.TTL < 0 {
		errs = append(errs, fmt.Errorf("enricher.cache.ttl: %s must be positive", c.Cache.TTL))
	}
	if c.RetryMin <= 0 {
		errs = append(errs, fmt.Errorf("enricher.retry_min: %s must be positive", c.RetryMin))
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("enricher.retry_max: %s must be >= enricher.retry_min (%s)", c.RetryMax, c.RetryMin))
	}
	if c.QueryTimeout <= 0 {
		errs = append(errs, fmt.Errorf("enricher.query_timeout: %s must be positive", c.QueryTimeout))
	}
	return errors.Join(errs...)
}

// retryPolicy is the enricher's retry policy: retry_min doubling to
// retry_max, with the stage's jitter (topology.StageSpecs).
func (c Config) retryPolicy() retry.Policy {
	return retry.Policy{Delay: c.RetryMin, Max: c.RetryMax}
}
