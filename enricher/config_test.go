package enricher_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/enricher"
	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/productdb"
)

func TestConfigDefaults(t *testing.T) {
	c := enricher.Config{}.WithDefaults()
	require.Equal(t, enricher.Config{
		DB:           productdb.Config{Driver: "sqlite", MaxOpenConns: 8},
		Cache:        enricher.CacheConfig{Size: 10000, TTL: 30 * time.Second},
		LookupGrace:  30 * time.Second,
		RetryMin:     200 * time.Millisecond,
		RetryMax:     5 * time.Second,
		QueryTimeout: 5 * time.Second,
	}, c)
}

func TestConfigValidateNamesKeys(t *testing.T) {
	base := enricher.Config{DB: productdb.Config{DSN: "x.db"}}
	cases := []struct {
		name   string
		mutate func(*enricher.Config)
		want   string
	}{
		{"ok", func(*enricher.Config) {}, ""},
		{"cache off", func(c *enricher.Config) { c.Cache.Size = -1 }, ""},
		{"negative grace parks at once", func(c *enricher.Config) { c.LookupGrace = -1 }, ""},
		{"dsn", func(c *enricher.Config) { c.DB.DSN = "" }, "enricher.db.dsn"},
		{"driver", func(c *enricher.Config) { c.DB.Driver = "mssql" }, "enricher.db.driver"},
		{"cache size", func(c *enricher.Config) { c.Cache.Size = -2 }, "enricher.cache.size"},
		{"cache ttl", func(c *enricher.Config) { c.Cache.TTL = -time.Second }, "enricher.cache.ttl"},
		{"retry min", func(c *enricher.Config) { c.RetryMin = -time.Second }, "enricher.retry_min"},
		{"retry max", func(c *enricher.Config) { c.RetryMax = 100 * time.Millisecond; c.RetryMin = time.Second }, "enricher.retry_max"},
		{"query timeout", func(c *enricher.Config) { c.QueryTimeout = -1 }, "enricher.query_timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.mutate(&cfg)
			err := cfg.WithDefaults().Validate()
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestNewNamesTheBrokenExpression(t *testing.T) {
	db, dbc := openSQLite(t, "")
	h := newHarness(t, 1, fastConfig(dbc), db, loadCatalog(t, nil))
	cases := []struct {
		name   string
		mutate func(*catalog.Config)
		want   string
	}{
		{"from", func(c *catalog.Config) { c.Types["order_placed"].Lookups[1].From = ".data.coupon |" },
			"catalog.types.order_placed.lookups[1].from"},
		{"body", func(c *catalog.Config) { setType(c, "payment", func(t *catalog.Type) { t.Body = "{amount: }" }) },
			"catalog.types.payment.body"},
		{"id_key", func(c *catalog.Config) {
			setType(c, "order_placed", func(t *catalog.Type) { t.CRM.IDKey = `"order:\(.data.order_id"` })
		}, "catalog.types.order_placed.crm.id_key"},
		{"unknown function", func(c *catalog.Config) { setType(c, "review", func(t *catalog.Type) { t.Body = "nosuchfn(1)" }) },
			"catalog.types.review.body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The catalog compiles every expression, so a broken one is
			// refused (naming its key) before the enricher is built.
			b, err := os.ReadFile("testdata/catalog.yaml")
			require.NoError(t, err)
			var cfg catalog.Config
			require.NoError(t, yaml.Unmarshal(b, &cfg))
			c.mutate(&cfg)
			_, err = catalog.Compile(cfg, os.DirFS("testdata/schemas"))
			require.ErrorContains(t, err, c.want)
		})
	}
	_, err := enricher.New(fastConfig(dbc), enricher.Deps{NC: h.nc, JS: h.js, Names: h.names, Catalog: loadCatalog(t, nil), DB: db})
	require.NoError(t, err)
	_, err = enricher.New(fastConfig(dbc), enricher.Deps{JS: h.js, Catalog: loadCatalog(t, nil), DB: db})
	require.ErrorContains(t, err, "Deps.NC")
	_, err = enricher.New(enricher.Config{}, enricher.Deps{})
	require.ErrorContains(t, err, "enricher.db.dsn")
}

func setType(c *catalog.Config, name string, f func(*catalog.Type)) {
	t := c.Types[name]
	f(&t)
	c.Types[name] = t
}

func TestStartRejectsMissingTablesAndColumns(t *testing.T) {
	db, dbc := openSQLite(t, "")
	h := newHarness(t, 1, fastConfig(dbc), db, loadCatalog(t, nil))
	cases := []struct {
		name   string
		mutate func(*catalog.Config)
		want   string
	}{
		{"column", func(c *catalog.Config) { c.Types["order_placed"].Lookups[0].Columns[1] = "e_mail" },
			"catalog.types.order_placed.lookups[0]"},
		{"key column", func(c *catalog.Config) { c.Types["review"].Lookups[0].KeyColumn = "customer_id" },
			"catalog.types.review.lookups[0]"},
		{"table", func(c *catalog.Config) { c.Types["order_placed"].Lookups[1].Table = "vouchers" },
			"catalog.types.order_placed.lookups[1]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svc, err := enricher.New(fastConfig(dbc), enricher.Deps{NC: h.nc, JS: h.js, Names: h.names,
				Catalog: loadCatalog(t, c.mutate), DB: db})
			require.NoError(t, err)
			err = svc.Start(context.Background())
			require.ErrorIs(t, err, enricher.ErrLookupCheck)
			require.ErrorContains(t, err, c.want)
			// Nothing was started: no lanes, no micro service.
			require.Empty(t, svc.Stats().Lanes)
			_, err = h.nc.Request("$SRV.PING."+enricher.ServiceName, nil, 200*time.Millisecond)
			require.ErrorIs(t, err, nats.ErrNoResponders)
		})
	}
}

func TestStartTwiceAndStopIdempotent(t *testing.T) {
	db, dbc := openSQLite(t, "")
	h := newHarness(t, 2, fastConfig(dbc), db, loadCatalog(t, nil))
	ctx := context.Background()
	require.NoError(t, h.svc.Start(ctx))
	require.ErrorIs(t, h.svc.Start(ctx), enricher.ErrStarted)
	require.Len(t, h.svc.Stats().Lanes, 2)
	require.NoError(t, h.svc.Restart(1))
	require.Error(t, h.svc.Restart(2))
	require.NoError(t, h.svc.Stop(ctx))
	require.Error(t, h.svc.Restart(1))
	require.NoError(t, h.svc.Stop(ctx))
	require.Empty(t, h.svc.Stats().Lanes)
}
