package imagebuild

import (
	"bufio"
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const repoRoot = "../../../.."

// instruction is one Dockerfile instruction with its continuation lines
// joined.
type instruction struct {
	op, args string
}

// stage is one FROM ... and what follows it.
type stage struct {
	from, name string
	ins        []instruction
}

func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	var stages []stage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		op, args, _ := strings.Cut(line, " ")
		op = strings.ToUpper(op)
		args = strings.TrimSpace(args)
		if op == "FROM" {
			f := strings.Fields(args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			return
		}
		require.NotEmptyf(t, stages, "Dockerfile: %s before FROM", op)
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, instruction{op, args})
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return stages
}

func (s stage) all(op string) []string {
	var out []string
	for _, in := range s.ins {
		if in.op == op {
			out = append(out, in.args)
		}
	}
	return out
}

var goBuildRe = regexp.MustCompile(`CGO_ENABLED=0 go build .*`)

// goBuild returns the build stage's `CGO_ENABLED=0 go build ...` command.
func goBuild(t *testing.T, stages []stage) string {
	t.Helper()
	for _, s := range stages[:len(stages)-1] {
		for _, run := range s.all("RUN") {
			if m := goBuildRe.FindString(run); m != "" {
				return m
			}
		}
	}
	t.Fatal("Dockerfile: no `CGO_ENABLED=0 go build` in a build stage")
	return ""
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t)
	require.GreaterOrEqual(t, len(stages), 2, "multi-stage: a Go builder and a minimal runtime")
	build, final := stages[0], stages[len(stages)-1]
	require.Regexp(t, `^golang:1\.\d+`, build.from)
	require.Regexp(t, `^(gcr\.io/distroless/static(-debian\d+)?:nonroot|scratch)$`, final.from)
	require.Contains(t, strings.Join(build.all("RUN"), "\n"), "--mount=type=cache,target=/go/pkg/mod", "module cache mount")

	cmd := goBuild(t, stages)
	require.Contains(t, cmd, "-trimpath")
	require.Regexp(t, `-ldflags="-s -w`, cmd)
	require.True(t, strings.HasSuffix(cmd, " ./cmd/sluice"), "builds ./cmd/sluice: %s", cmd)

	users := final.all("USER")
	require.NotEmpty(t, users, "the final stage sets USER")
	user := users[len(users)-1]
	uid, _, _ := strings.Cut(user, ":")
	require.NotContains(t, []string{"root", "0"}, uid, "the final stage runs as root")
	require.Equal(t, []string{`["/sluice"]`}, final.all("ENTRYPOINT"))
	var copied bool
	for _, c := range final.all("COPY") {
		copied = copied || strings.HasPrefix(c, "--from="+build.name+" ") && strings.HasSuffix(c, " /sluice")
	}
	require.True(t, copied, "the final stage copies the binary from %s to /sluice", build.name)
	require.NotEmpty(t, final.all("EXPOSE"))
}

// ignorePatterns reads .dockerignore as regular expressions. Only what
// Docker and these tests agree on is allowed: paths and globs (*, ?, **),
// no "!" exceptions.
func ignorePatterns(t *testing.T) []*regexp.Regexp {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	require.NoError(t, err)
	var res []*regexp.Regexp
	for _, line := range strings.Split(string(b), "\n") {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		require.Falsef(t, strings.HasPrefix(p, "!"), ".dockerignore: %q: exceptions are not supported by this test", p)
		require.NotContainsf(t, p, "[", ".dockerignore: %q: character classes are not supported by this test", p)
		p = strings.Trim(filepath.ToSlash(filepath.Clean(p)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("$")
		res = append(res, regexp.MustCompile(re.String()))
	}
	return res
}

// ignored reports whether rel (slash-separated) or a folder above it
// matches a pattern.
func ignored(res []*regexp.Regexp, rel string) bool {
	for p := rel; p != "." && p != ""; p = filepath.ToSlash(filepath.Dir(p)) {
		for _, re := range res {
			if re.MatchString(p) {
				return true
			}
		}
	}
	return false
}

func TestDockerignore(t *testing.T) {
	res := ignorePatterns(t)
	for _, p := range []string{".git", ".git/config", ".env", "bin/sluice", "data/product.db", "cmd/sluice/app.test"} {
		require.Truef(t, ignored(res, p), "%s must stay out of the build context", p)
	}
	for _, p := range []string{"go.work", "go.work.sum", "cmd/sluice/main.go", "cmd/sluice/internal/app/testdata/import/customers.xlsx",
		"schemas/marketplace/seed.sql", "watchdog/static"} {
		require.Falsef(t, ignored(res, p), "%s is needed by the build (go.work, //go:embed)", p)
	}
}

// TestDockerfileBuild runs the Dockerfile's go build on a copy of the build
// context (the repository less .dockerignore) and checks that the binary
// is static and runs.
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Dockerfile's go build (about 1.5 min with a cold build cache, seconds with a warm one)")
	}
	res := ignorePatterns(t)
	ctxDir := t.TempDir()
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if ignored(res, filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(ctxDir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(ctxDir, ".git"))
	require.True(t, os.IsNotExist(err))

	bin := filepath.Join(t.TempDir(), "sluice")
	cmdline := goBuild(t, parseDockerfile(t))
	cmdline = strings.ReplaceAll(cmdline, "${VERSION}", "imagebuild-test")
	require.Contains(t, cmdline, "-o /out/sluice ")
	cmdline = strings.Replace(cmdline, "-o /out/sluice ", "-o '"+bin+"' ", 1)
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), "GOWORK=") // the copy's go.work, not the developer's
	out, err := cmd.CombinedOutput()
	require.NoErrorf(t, err, "%s\n%s", cmdline, out)

	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "dynamically linked: the distroless/static image has no libc")
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	require.Empty(t, libs)
	require.Nil(t, f.Section(".symtab"), "-s: no symbol table")

	out, err = exec.Command(bin, "--version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "imagebuild-test", "the -X version flag reaches mesh/version.Commit")
}
