package app

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/ingest"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/ledger"
)

// FuzzLoadConfig runs the config loader (YAML with unknown keys refused,
// then one SLUICE_* variable, defaults, validation for every target) over
// any input: it returns a value or an error, never panics, and what
// `sluice config print` writes for a valid config is YAML that loads back.
func FuzzLoadConfig(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	require.NoError(f, err)
	f.Add(example, uint16(0), "")
	f.Add([]byte("nats:\n  url: nats://u:p@h:4222\ningest:\n  tokens:\n  - {name: web, token: 0123456789abcdef}\n"), uint16(3), "1s")
	f.Add([]byte("dispatcher:\n  crm:\n    headers: {Authorization: Bearer x}\n"), uint16(7), "a,b")
	f.Add([]byte("topology: {partitions: -1}\nwatchdog: {page: {token: x}}\n"), uint16(11), "true")
	f.Add([]byte("ledger: {sensitive_fields: [email, '']}\n"), uint16(20), "-5")
	f.Add([]byte("a: &a [*a]\n"), uint16(1), "x")
	fields := config.Fields(EnvPrefix, &Config{})
	f.Fuzz(func(t *testing.T, doc []byte, field uint16, val string) {
		c := Config{Ingest: ingest.DefaultConfig(), Ledger: ledger.DefaultConfig()}
		fd := fields[int(field)%len(fields)]
		env := fd.Env + "=" + val
		if fd.IsMap {
			env = fd.Env + "_X=" + val
		}
		if err := config.Decode(doc, &c); err != nil {
			return
		}
		if err := config.Load("", []string{env}, EnvPrefix, &c); err != nil {
			require.ErrorIs(t, err, config.ErrInvalid)
			return
		}
		c = c.withDefaults()
		for _, target := range Targets {
			if err := c.validate(target); err != nil {
				require.NotEmpty(t, err.Error())
			}
		}
		var out bytes.Buffer
		require.NoError(t, printConfig(&out, c))
		back := Config{}
		require.NoError(t, config.Decode(out.Bytes(), &back), out.String())
	})
}
