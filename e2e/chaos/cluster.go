package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// cluster is a 3-node nats-server cluster, one process per node, each in
// its own network namespace (netns.go), file store under dir/n<i>.
type cluster struct {
	nodes []*proc
}

const (
	clientPort = 4222
	routePort  = 6222
	monPort    = 8222
)

// clientURLs is the comma-separated client URL list of every node.
func clientURLs(n int) string {
	urls := make([]string, n)
	for i := range n {
		urls[i] = fmt.Sprintf("nats://%s:%d", nodeIP(i+1), clientPort)
	}
	return strings.Join(urls, ",")
}

// nodeConfig is node i's server config.
func nodeConfig(i, n int, storeDir string) string {
	var routes []string
	for j := 1; j <= n; j++ {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats://%s:%d", nodeIP(j), routePort))
		}
	}
	return fmt.Sprintf(`server_name: n%d
listen: "%s:%d"
http: "%s:%d"
jetstream {
  store_dir: %q
}
cluster {
  name: chaos
  listen: "%s:%d"
  routes: [%s]
}
`, i, nodeIP(i), clientPort, nodeIP(i), monPort, storeDir, nodeIP(i), routePort, strings.Join(routes, ", "))
}

// startCluster writes the configs and starts n nodes inside their
// namespaces, then waits until each node's monitoring port answers
// /healthz?js-enabled-only=true.
func startCluster(s *suite, n int) (*cluster, error) {
	c := &cluster{}
	for i := 1; i <= n; i++ {
		dir := filepath.Join(s.dir, fmt.Sprintf("n%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		conf := filepath.Join(s.dir, fmt.Sprintf("n%d.conf", i))
		if err := os.WriteFile(conf, []byte(nodeConfig(i, n, dir)), 0o644); err != nil {
			return nil, err
		}
		p := s.newProc(fmt.Sprintf("nats-n%d", i),
			[]string{"ip", "netns", "exec", nodeNS(i), s.natsServer, "-c", conf}, nil)
		if err := p.start(); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, p)
	}
	for i := range c.nodes {
		if err := c.waitNode(i + 1); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// waitNode waits for node i's JetStream to be up.
func (c *cluster) waitNode(i int) error {
	return waitHTTP(fmt.Sprintf("http://%s:%d/healthz?js-enabled-only=true", nodeIP(i), monPort), c.nodes[i-1], time.Minute)
}

// node returns the 1-based index of the node named name ("n2" → 2), 0 if none.
func (c *cluster) node(name string) int {
	for i := range c.nodes {
		if name == fmt.Sprintf("n%d", i+1) {
			return i + 1
		}
	}
	return 0
}

// streamLeader asks the cluster which node leads stream.
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info := st.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader now", stream)
	}
	return info.Cluster.Leader, nil
}

// connect opens the suite's own client connection to the cluster (for
// stream info only; the producer goes through ingest's HTTP).
func connect(n int) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(clientURLs(n), nats.Name("chaos-suite"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.Timeout(3*time.Second))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
