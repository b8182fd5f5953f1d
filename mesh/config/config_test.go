package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/config"
)

type inner struct {
	URL     string        `yaml:"url"`
	Timeout time.Duration `yaml:"timeout"`
	Tags    []string      `yaml:"tags"`
}

type root struct {
	DataDir string            `yaml:"data_dir"`
	Count   int               `yaml:"count"`
	On      bool              `yaml:"on"`
	Inner   inner             `yaml:"inner"`
	Map     map[string]string `yaml:"map"`
}

func TestLoadFileThenEnv(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(p, []byte("count: 3\ninner:\n  url: http://a\n  timeout: 2s\n"), 0o600))
	c := root{DataDir: "./data", Count: 1}
	err := config.Load(p, []string{"X_INNER_URL=http://b", "X_ON=true", "X_INNER_TAGS=a, b", "OTHER=1"}, "X_", &c)
	require.NoError(t, err)
	require.Equal(t, root{DataDir: "./data", Count: 3, On: true, Inner: inner{URL: "http://b", Timeout: 2 * time.Second, Tags: []string{"a", "b"}}}, c)
}

func TestEnvSetsMapEntries(t *testing.T) {
	var c root
	require.NoError(t, config.Load("", []string{"X_MAP_AUTHORIZATION=Bearer s3cret", "X_MAP_=ignored"}, "X_", &c))
	require.Equal(t, map[string]string{"AUTHORIZATION": "Bearer s3cret"}, c.Map)
}

func TestEnvMapEntryReplacesFileEntryOfAnyCase(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(p, []byte("map:\n  Authorization: from-file\n  Other: x\n"), 0o600))
	var c root
	require.NoError(t, config.Load(p, []string{"X_MAP_AUTHORIZATION=from-env"}, "X_", &c))
	require.Equal(t, map[string]string{"AUTHORIZATION": "from-env", "Other": "x"}, c.Map)
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(p, []byte("inner:\n  ulr: x\n"), 0o600))
	var c root
	err := config.Load(p, nil, "X_", &c)
	require.ErrorIs(t, err, config.ErrInvalid)
	require.ErrorContains(t, err, "ulr")

	err = config.Load("", []string{"X_INNER_TIMEOUT=soon"}, "X_", &c)
	require.ErrorIs(t, err, config.ErrInvalid)
	require.ErrorContains(t, err, "inner.timeout")
}

func TestFieldsListsEnvNames(t *testing.T) {
	var c root
	var envs []string
	for _, f := range config.Fields("SLUICE_", &c) {
		envs = append(envs, f.Key+"="+f.Env)
	}
	require.Contains(t, envs, "data_dir=SLUICE_DATA_DIR")
	require.Contains(t, envs, "inner.url=SLUICE_INNER_URL")
}
