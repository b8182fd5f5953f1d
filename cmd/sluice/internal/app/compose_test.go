package app

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
	"sluice.dev/ingest"
	"sluice.dev/mesh/config"
)

// These tests check compose.yaml (and the Dockerfile's environment)
// against the binary it runs, since no Docker engine runs where the tests
// do: every command parses with the real cobra tree, every SLUICE_*
// variable is a config key, each service's configuration loads and
// validates for its target exactly as the container would load it, and the
// wiring between services (NATS nodes and credentials, databases, CRM URL,
// published ports, dependencies, mounts) is consistent.

func TestComposeFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars map[string]string
	}{
		{"defaults", nil}, // `make up` with no .env
		{".env.example", readDotEnv(t, filepath.Join(repoRoot, ".env.example"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := loadCompose(t, tc.vars)
			checkComposeShape(t, f)
			nodes := checkNATSNodes(t, f)
			checkSluiceServices(t, f, nodes)
		})
	}
}

// TestComposeVariables: every ${VAR} has a default (make up works without
// a .env) and is documented in .env.example, which names nothing else.
func TestComposeVariables(t *testing.T) {
	example := readDotEnv(t, filepath.Join(repoRoot, ".env.example"))
	_, vars := loadCompose(t, nil)
	require.NotEmpty(t, vars.refs)
	for name := range vars.refs {
		require.Falsef(t, vars.noDefault[name], "compose.yaml uses ${%s} without a default: write ${%s:-demo-value}", name, name)
		require.Containsf(t, example, name, ".env.example does not document ${%s} used in compose.yaml", name)
	}
	for name := range example {
		require.Containsf(t, vars.refs, name, ".env.example sets %s, which compose.yaml does not use", name)
	}
}

// checkComposeShape: dependencies, mounts, volumes, configs, ports.
func checkComposeShape(t *testing.T, f *composeFile) {
	require.NotEmpty(t, f.Name)
	hostPorts := map[string]string{}
	for name, s := range f.Services {
		require.Truef(t, s.Image != "" || s.Build != nil, "%s: no image and no build", name)
		for dep, d := range s.DependsOn {
			require.Truef(t, hasKey(f.Services, dep), "%s depends on %q, which is not a service", name, dep)
			require.Containsf(t, []string{"service_started", "service_healthy", "service_completed_successfully"},
				d.Condition, "%s depends_on %s: condition", name, dep)
			if d.Condition == "service_healthy" {
				require.NotNilf(t, f.Services[dep].Healthcheck, "%s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			require.GreaterOrEqualf(t, len(parts), 2, "%s: volume %q is not source:target", name, v)
			src := parts[0]
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				_, err := os.Stat(filepath.Join(repoRoot, src))
				require.NoErrorf(t, err, "%s mounts %s, which is not in the repository", name, src)
			} else {
				require.Truef(t, hasKey(f.Volumes, src), "%s mounts volume %q, not declared under volumes:", name, src)
			}
		}
		for _, c := range s.Configs {
			require.Truef(t, hasKey(f.Configs, c.Source), "%s uses config %q, not declared under configs:", name, c.Source)
		}
		if s.Build != nil {
			_, err := os.Stat(filepath.Join(repoRoot, s.Build.Context, cmp(s.Build.Dockerfile, "Dockerfile")))
			require.NoErrorf(t, err, "%s: build context/Dockerfile", name)
		}
		for _, p := range s.Ports {
			ip, host, _ := splitPort(t, p)
			require.Equalf(t, "127.0.0.1", ip, "%s publishes %q beyond loopback", name, p)
			if host == "" {
				continue
			}
			require.Emptyf(t, hostPorts[host], "%s and %s both publish host port %s", name, hostPorts[host], host)
			hostPorts[host] = name
			require.LessOrEqualf(t, s.Deploy.Replicas, 1, "%s has %d replicas: a fixed host port %s can be bound by one only",
				name, s.Deploy.Replicas, host)
		}
	}
	for name, c := range f.Configs {
		require.Truef(t, c.Content != "" || c.File != "", "config %s is empty", name)
	}
}

// splitPort splits "ip:host:container", "ip::container" or "container".
func splitPort(t *testing.T, p string) (ip, host, container string) {
	parts := strings.Split(p, ":")
	switch len(parts) {
	case 1:
		return "", "", parts[0]
	case 3:
		return parts[0], parts[1], parts[2]
	}
	t.Fatalf("port %q: write it as 127.0.0.1:HOST:CONTAINER or 127.0.0.1::CONTAINER", p)
	return
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// natsNode is a NATS service with the options its config file gives it.
type natsNode struct {
	name string
	opts *server.Options
}

var natsImageRe = regexp.MustCompile(`^nats:(\d+)\.(\d+)\.(\d+)-alpine$`)

// checkNATSNodes loads each nats-N service's config file as nats-server
// would, with that service's environment, and checks the cluster.
func checkNATSNodes(t *testing.T, f *composeFile) []natsNode {
	var nodes []natsNode
	for _, name := range sortedKeys(f.Services) {
		if strings.HasPrefix(name, "nats-") {
			nodes = append(nodes, natsNode{name: name})
		}
	}
	require.Len(t, nodes, 3, "a three-node NATS cluster (nats-1, nats-2, nats-3)")
	for i := range nodes {
		n := &nodes[i]
		s := f.Services[n.name]
		m := natsImageRe.FindStringSubmatch(s.Image)
		require.NotNilf(t, m, "%s: image %q: pin nats:X.Y.Z-alpine (alpine has wget for the healthcheck)", n.name, s.Image)
		minor, _ := strconv.Atoi(m[2])
		require.Truef(t, m[1] == "2" && minor >= 11, "%s: %s: pinned priority groups need nats-server 2.11+", n.name, s.Image)
		require.Equalf(t, "v"+m[1]+"."+m[2]+"."+m[3], natsServerModuleVersion(t),
			"%s: run the nats-server version the tests run (cmd/sluice/go.mod)", n.name)
		require.Len(t, s.Command, 2)
		require.Contains(t, []string{"-c", "--config"}, s.Command[0])
		confSrc, ok := s.mountTarget(s.Command[1])
		require.Truef(t, ok, "%s: %s is not mounted", n.name, s.Command[1])
		permSrc, ok := s.mountTarget(path.Join(path.Dir(s.Command[1]), "permissions.conf"))
		require.Truef(t, ok, "%s: permissions.conf must sit next to %s (nats.conf includes ./permissions.conf)", n.name, s.Command[1])
		require.Equal(t, filepath.Dir(confSrc), filepath.Dir(permSrc))

		for k, v := range s.Environment {
			t.Setenv(k, v)
		}
		opts, err := server.ProcessConfigFile(filepath.Join(repoRoot, confSrc))
		require.NoErrorf(t, err, "%s: %s with this service's environment", n.name, confSrc)
		n.opts = opts
		require.Equal(t, n.name, opts.ServerName, "server_name comes from NATS_SERVER_NAME")
		require.True(t, opts.JetStream, "%s: JetStream on", n.name)
		vol, ok := mountFor(s, opts.StoreDir)
		require.Truef(t, ok, "%s: the JetStream store %s is on no volume", n.name, opts.StoreDir)
		require.NotContainsf(t, vol, "/", "%s: the store must be a named volume, not %s", n.name, vol)
		require.Equal(t, 6222, opts.Cluster.Port)
		var routes []string
		for _, r := range opts.Routes {
			routes = append(routes, r.Host)
		}
		var want []string
		for _, o := range nodes {
			want = append(want, fmt.Sprintf("%s:%d", o.name, opts.Cluster.Port))
		}
		require.ElementsMatch(t, want, routes, "%s: routes to every node", n.name)
		require.NotNilf(t, s.Healthcheck, "%s: healthcheck", n.name)
		hc := strings.Join(s.Healthcheck.Test, " ")
		require.Containsf(t, hc, fmt.Sprintf("127.0.0.1:%d/healthz", opts.HTTPPort), "%s: healthcheck on the monitoring port", n.name)
	}
	for _, n := range nodes[1:] {
		require.Equal(t, nodes[0].opts.Cluster.Name, n.opts.Cluster.Name, "one cluster name")
	}
	return nodes
}

// mountFor returns the volume or bind source mounted at or above dir.
func mountFor(s composeService, dir string) (string, bool) {
	for d := dir; d != "/" && d != "."; d = path.Dir(d) {
		if src, ok := s.mountTarget(d); ok {
			return src, true
		}
	}
	return "", false
}

func natsServerModuleVersion(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(repoRoot, "cmd", "sluice", "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`github.com/nats-io/nats-server/v2 (v\S+)`).FindSubmatch(b)
	require.NotNil(t, m)
	return string(m[1])
}

// checkSluiceServices loads every Sluice service's configuration the way
// its container does and checks the wiring.
func checkSluiceServices(t *testing.T, f *composeFile, nodes []natsNode) {
	imageEnv := dockerfileEnv(t)
	known := map[string]bool{}
	var mapPrefixes []string
	for _, fl := range config.Fields(EnvPrefix, &Config{}) {
		known[fl.Env] = true
		if fl.IsMap {
			mapPrefixes = append(mapPrefixes, fl.Env+"_")
		}
	}
	for k := range imageEnv {
		require.Truef(t, known[k], "Dockerfile: ENV %s is not a config key (sluice config env)", k)
	}
	pg := f.Services["postgres"]
	natsNames := map[string]bool{}
	for _, n := range nodes {
		natsNames[n.name] = true
	}
	targets := map[string]string{}
	var crmsimAddr string
	var loaded []string
	configs := map[string]Config{}
	for _, name := range sortedKeys(f.Services) {
		s := f.Services[name]
		if !s.isSluice() {
			continue
		}
		t.Run(name, func(t *testing.T) {
			require.Containsf(t, []string{"on-failure", "unless-stopped", "always"}, s.Restart,
				"%s: sluice run exits when NATS is unreachable at start: it needs a restart policy", name)
			cmd, rest, err := newRoot(io.Discard, io.Discard).Find(s.Command)
			require.NoErrorf(t, err, "%s: command %q", name, s.Command)
			require.Truef(t, cmd.Runnable(), "%s: %q is not a runnable command", name, s.Command)
			require.NoErrorf(t, cmd.ParseFlags(rest), "%s: flags of %q", name, s.Command)
			require.Emptyf(t, cmd.Flags().Args(), "%s: stray arguments", name)
			for k := range s.Environment {
				ok := known[k] || slices.ContainsFunc(mapPrefixes, func(p string) bool { return strings.HasPrefix(k, p) })
				require.Truef(t, ok, "%s: %s is not a Sluice config variable (see `sluice config env`): a misspelt variable is silently ignored", name, k)
			}
			listens := map[string]string{} // container port -> host
			switch cmd.Name() {
			case "crmsim":
				crmsimAddr = cmd.Flags().Lookup("addr").Value.String()
				addListen(t, listens, crmsimAddr)
				require.Empty(t, s.Environment, "crmsim reads flags, not SLUICE_* variables")
			case "run":
				target, _ := cmd.Flags().GetString("target")
				require.Containsf(t, Targets, target, "%s: --target", name)
				require.NotEqualf(t, "all", target, "%s: one service per container", name)
				require.Emptyf(t, targets[target], "%s and %s both run %s", name, targets[target], target)
				targets[target] = name
				for n := range natsNames {
					require.Equalf(t, "service_healthy", s.DependsOn[n].Condition, "%s must wait for %s", name, n)
				}
				c := loadServiceConfig(t, f, s, cmd.Flags().Lookup("config").Value.String(), target, imageEnv)
				configs[name] = c
				loaded = append(loaded, name)
				checkRunConfig(t, f, name, target, c, nodes, pg, listens)
			default:
				t.Fatalf("%s: runs %q; expected run or crmsim", name, cmd.Name())
			}
			for _, p := range s.Ports {
				_, _, cport := splitPort(t, p)
				host, ok := listens[cport]
				require.Truef(t, ok, "%s publishes container port %s, where it does not listen (%v)", name, cport, listens)
				require.Equalf(t, "0.0.0.0", host, "%s listens on %s:%s: a published port must listen on 0.0.0.0", name, host, cport)
			}
		})
	}
	want := slices.DeleteFunc(slices.Clone(Targets), func(s string) bool { return s == "all" })
	require.ElementsMatch(t, want, slices.Collect(maps.Keys(targets)), "every service runs in a container of its own")
	require.Equal(t, 2, f.Services[targets["dispatcher"]].Deploy.Replicas, "two dispatcher replicas")
	// Every service must create the same streams: same topology, same NATS.
	for _, name := range loaded[1:] {
		require.Equalf(t, configs[loaded[0]].Topology, configs[name].Topology, "topology of %s vs %s", loaded[0], name)
		require.Equalf(t, configs[loaded[0]].NATS, configs[name].NATS, "nats of %s vs %s", loaded[0], name)
	}
	// The dispatcher sends to the CRM simulator's service and port.
	d := configs[targets["dispatcher"]]
	require.False(t, d.UsesSimulator(), "the dispatcher must not start an in-process simulator")
	u, err := url.Parse(d.Dispatcher.CRM.URL)
	require.NoError(t, err)
	_, simPort, _ := net.SplitHostPort(crmsimAddr)
	require.Truef(t, hasKey(f.Services, u.Hostname()), "dispatcher.crm.url host %q is not a service", u.Hostname())
	require.Equal(t, "crmsim", u.Hostname())
	require.Equal(t, simPort, u.Port(), "dispatcher.crm.url port vs crmsim --addr")
	require.Equal(t, "service_started", f.Services[targets["dispatcher"]].DependsOn[u.Hostname()].Condition)
	// The watchdog expects every micro service that runs.
	micro := map[string]string{"ingest": ingest.ServiceName, "enricher": enricher.ServiceName,
		"dispatcher": dispatcher.ServiceName, "inbound": inbound.ServiceName}
	for target, svc := range micro {
		if targets[target] != "" {
			require.Containsf(t, configs[targets["watchdog"]].Watchdog.Services, svc, "watchdog.services lacks %s", svc)
		}
	}
	// The services authenticate as a NATS user whose password the nodes share.
	user, pass := configs[loaded[0]].NATS.User, configs[loaded[0]].NATS.Password
	require.NotEmpty(t, user, "nats.user")
	for _, n := range nodes {
		i := slices.IndexFunc(n.opts.Users, func(u *server.User) bool { return u.Username == user })
		require.GreaterOrEqualf(t, i, 0, "%s: no NATS user %q", n.name, user)
		require.Equalf(t, pass, n.opts.Users[i].Password, "%s: password of %q differs from SLUICE_NATS_PASSWORD", n.name, user)
	}
}

// loadServiceConfig sets the container's environment (the image's ENV,
// then the service's) and loads its configuration with LoadConfig.
func loadServiceConfig(t *testing.T, f *composeFile, s composeService, cfgFlag, target string, imageEnv map[string]string) Config {
	cleanEnv(t)
	for k, v := range imageEnv {
		t.Setenv(k, v)
	}
	for k, v := range s.Environment {
		t.Setenv(k, v)
	}
	cfgPath := ""
	if cfgFlag != "" {
		i := slices.IndexFunc(s.Configs, func(c struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		}) bool {
			return c.Target == cfgFlag
		})
		if i >= 0 {
			cfgPath = filepath.Join(t.TempDir(), "sluice.yaml")
			require.NoError(t, os.WriteFile(cfgPath, []byte(f.Configs[s.Configs[i].Source].Content), 0o600))
		} else {
			src, ok := s.mountTarget(cfgFlag)
			require.Truef(t, ok, "--config %s is neither a config nor a mount of the service", cfgFlag)
			cfgPath = filepath.Join(repoRoot, src)
		}
	}
	c, err := LoadConfig(cfgPath, target)
	require.NoErrorf(t, err, "the configuration of target %s (env + %s)", target, cfgFlag)
	_, err = loadCatalog(c.Catalog)
	require.NoError(t, err)
	return c
}

// checkRunConfig checks one `sluice run --target` service's loaded
// configuration and records where it listens.
func checkRunConfig(t *testing.T, f *composeFile, name, target string, c Config, nodes []natsNode, pg composeService, listens map[string]string) {
	var hosts []string
	for _, raw := range strings.Split(c.NATS.URL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		require.NoError(t, err)
		require.Equal(t, "nats", u.Scheme)
		hosts = append(hosts, u.Host)
	}
	var want []string
	for _, n := range nodes {
		want = append(want, fmt.Sprintf("%s:%d", n.name, n.opts.Port))
	}
	require.ElementsMatch(t, want, hosts, "%s: nats.url lists every node", name)
	require.Equal(t, 3, c.Topology.Replicas, "%s: R3 streams on three nodes", name)
	require.NotEqual(t, "off", c.Ops.Addr)
	addListen(t, listens, c.Ops.Addr)
	checkDB := func(driver, dsn string) {
		require.Equal(t, "postgres", driver)
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		require.Equal(t, "postgres", u.Hostname())
		require.Equal(t, "5432", u.Port())
		require.Equal(t, pg.Environment["POSTGRES_USER"], u.User.Username())
		pw, _ := u.User.Password()
		require.Equal(t, pg.Environment["POSTGRES_PASSWORD"], pw, "%s: the DSN's password is POSTGRES_PASSWORD", name)
		require.Equal(t, "/"+pg.Environment["POSTGRES_DB"], u.Path)
		require.Equal(t, "service_healthy", f.Services[name].DependsOn["postgres"].Condition)
	}
	switch target {
	case "ingest":
		addListen(t, listens, c.Ingest.HTTPAddr)
		require.NotEmpty(t, c.Ingest.Tokens, "ingest listens beyond loopback: producers must authenticate")
	case "enricher":
		checkDB(c.Enricher.DB.Driver, c.Enricher.DB.DSN)
	case "inbound":
		addListen(t, listens, c.Inbound.HTTPAddr)
		checkDB(c.Inbound.DB.Driver, c.Inbound.DB.DSN)
		require.NotEmpty(t, c.Inbound.Sources)
		for _, src := range c.Inbound.Sources {
			require.NotContains(t, src.Secrets, DemoWebhookSecret, "the built-in simulator's public secret")
		}
	}
}

func addListen(t *testing.T, listens map[string]string, addr string) {
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	listens[port] = host
}

// dockerfileEnv returns the ENV of the Dockerfile's final stage.
func dockerfileEnv(t *testing.T) map[string]string {
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
		case strings.EqualFold(fields[0], "FROM"):
			clear(env)
		case strings.EqualFold(fields[0], "ENV"):
			for _, kv := range fields[1:] {
				k, v, ok := strings.Cut(kv, "=")
				require.Truef(t, ok, "Dockerfile: write ENV KEY=VALUE: %q", line)
				env[k] = v
			}
		}
	}
	return env
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

func sortedKeys[V any](m map[string]V) []string {
	ks := slices.Collect(maps.Keys(m))
	sort.Strings(ks)
	return ks
}
