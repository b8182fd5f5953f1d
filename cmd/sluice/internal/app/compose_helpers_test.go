package app

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The parts of compose.yaml the tests read. Decoding refuses keys that are
// not listed here, so a misspelt key (depend_on, enviroment) fails instead
// of being ignored the way Docker Compose would reject it.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Configs  map[string]composeConfig  `yaml:"configs"`
	Volumes  map[string]any            `yaml:"volumes"`
	// Extensions holds the x-* keys (anchors for the services).
	Extensions map[string]any `yaml:",inline"`
}

type composeConfig struct {
	Content string `yaml:"content"`
	File    string `yaml:"file"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       *composeBuild     `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Configs     []struct {
		Source string `yaml:"source"`
		Target string `yaml:"target"`
	} `yaml:"configs"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Deploy struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
	Ports       []string `yaml:"ports"`
	Restart     string   `yaml:"restart"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
}

type composeBuild struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Args       map[string]string `yaml:"args"`
}

// isSluice reports whether the service runs the image built from the
// repository's Dockerfile.
func (s composeService) isSluice() bool { return s.Build != nil }

// mountTarget returns the host side of the bind mount or named volume
// mounted at the container path target, and whether there is one.
func (s composeService) mountTarget(target string) (source string, ok bool) {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0], true
		}
	}
	return "", false
}

// composeVars are the variables a compose.yaml is interpolated with, and
// what the interpolation saw.
type composeVars struct {
	values map[string]string
	// refs: every variable referenced; noDefault: those referenced
	// somewhere without a default.
	refs, noDefault map[string]bool
}

// loadCompose reads compose.yaml from the repository root, interpolates
// every scalar value (not keys, not comments) with vars the way Docker
// Compose does, and decodes it.
func loadCompose(t *testing.T, values map[string]string) (*composeFile, *composeVars) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "compose.yaml"))
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		t.Fatalf("compose.yaml is not YAML: %v", err)
	}
	vars := &composeVars{values: values, refs: map[string]bool{}, noDefault: map[string]bool{}}
	seen := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node) error
	walk = func(n *yaml.Node) error {
		if n == nil || seen[n] {
			return nil // an anchor's node is shared by its aliases: once only
		}
		seen[n] = true
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				if err := walk(c); err != nil {
					return err
				}
			}
		case yaml.MappingNode:
			for i := 1; i < len(n.Content); i += 2 {
				if err := walk(n.Content[i]); err != nil {
					return err
				}
			}
		case yaml.AliasNode:
			return walk(n.Alias)
		case yaml.ScalarNode:
			s, err := vars.interpolate(n.Value)
			if err != nil {
				return fmt.Errorf("line %d: %w", n.Line, err)
			}
			n.Value = s
		}
		return nil
	}
	if err := walk(&root); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(&root); err != nil {
		t.Fatal(err)
	}
	var f composeFile
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("compose.yaml has a key or shape these tests do not know (add it to composeService if Docker Compose accepts it): %v", err)
	}
	for k := range f.Extensions {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("compose.yaml: top-level key %q is neither a compose key the tests know nor an x- extension", k)
		}
	}
	return &f, vars
}

var interpRe = regexp.MustCompile(`\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|.?)`)

var interpVarRe = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?$`)

// interpolate expands $$, $NAME, ${NAME}, ${NAME:-default},
// ${NAME-default}, ${NAME:?message} and ${NAME?message}. Other forms
// (nested ${...} in a default, ${NAME:+x}) are errors: keep compose.yaml to
// what this understands.
func (v *composeVars) interpolate(s string) (string, error) {
	var errs []string
	out := interpRe.ReplaceAllStringFunc(s, func(m string) string {
		switch {
		case m == "$$":
			return "$"
		case strings.HasPrefix(m, "${"):
			inner := m[2 : len(m)-1]
			p := interpVarRe.FindStringSubmatch(inner)
			if p == nil || strings.Contains(p[3], "$") {
				errs = append(errs, fmt.Sprintf("%s: unsupported interpolation", m))
				return m
			}
			name, op, arg := p[1], p[2], p[3]
			v.refs[name] = true
			val, set := v.values[name]
			switch op {
			case "":
				v.noDefault[name] = true
				return val
			case ":-":
				if val == "" {
					return arg
				}
				return val
			case "-":
				if !set {
					return arg
				}
				return val
			default: // :? and ?
				v.noDefault[name] = true
				if !set || (op == ":?" && val == "") {
					errs = append(errs, fmt.Sprintf("%s: %s is required: %s", m, name, arg))
				}
				return val
			}
		case len(m) > 1 && (m[1] == '_' || m[1] >= 'A' && m[1] <= 'Z' || m[1] >= 'a' && m[1] <= 'z'):
			v.refs[m[1:]] = true
			v.noDefault[m[1:]] = true
			return v.values[m[1:]]
		}
		errs = append(errs, fmt.Sprintf("%q: a lone $ (write $$ for a literal $)", m))
		return m
	})
	if len(errs) > 0 {
		return s, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// readDotEnv reads KEY=VALUE lines (# comments, blank lines) as Docker
// Compose reads .env; values may be quoted.
func readDotEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vals := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			t.Fatalf("%s:%d: not KEY=VALUE: %q", path, n, line)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		vals[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vals
}
