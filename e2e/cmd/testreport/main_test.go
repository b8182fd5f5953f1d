package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A real `go test -json` run of a small module: a pass, a skip with a
// reason, a skipped subtest, a failure; a second package without tests.
func TestReportOfARealRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go test on a generated module")
	}
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.test/demo\n\ngo 1.22\n")
	write("a/a_test.go", `package a

import "testing"

func TestPasses(t *testing.T) {}

func TestNeedsPostgres(t *testing.T) { t.Skip("SLUICE_TEST_POSTGRES_DSN not set: skipping the PostgreSQL test") }

func TestTable(t *testing.T) {
	t.Run("one", func(t *testing.T) {})
	t.Run("two", func(t *testing.T) { t.Skipf("no chromium at %s", "/usr/bin/chromium") })
}
`)
	write("b/b_test.go", `package b

import "testing"

func TestBroken(t *testing.T) { t.Log("the detail of the failure"); t.Fatal("want 1, got 2") }
`)
	write("c/c.go", "package c\n")
	cmd := exec.Command("go", "test", "-json", "-count=1", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	raw, _ := cmd.Output() // exits 1: b fails
	var out bytes.Buffer
	code := run(bytes.NewReader(raw), &out, time.Hour)
	got := out.String()
	t.Log("\n" + got)
	if code != 1 {
		t.Errorf("exit code %d, want 1 (a test failed)", code)
	}
	for _, want := range []string{
		"ok  \texample.test/demo/a\t",
		"(5 tests, 2 skipped)",
		"--- FAIL: TestBroken (",
		"the detail of the failure",
		"want 1, got 2",
		"FAIL\texample.test/demo/b\t",
		"Skipped tests (2):",
		"example.test/demo/a TestNeedsPostgres: SLUICE_TEST_POSTGRES_DSN not set: skipping the PostgreSQL test",
		"example.test/demo/a TestTable/two: no chromium at /usr/bin/chromium",
		"Failed:\n  example.test/demo/b TestBroken",
		"DONE 6 tests, 2 skipped, 1 failures in ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(got, "demo/c") || strings.Contains(got, "=== RUN") {
		t.Errorf("a package without tests or === lines are printed")
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if !strings.HasPrefix(lines[len(lines)-1], "DONE ") {
		t.Errorf("closing line %q", lines[len(lines)-1])
	}
}

func TestHeartbeatNamesRunningPackages(t *testing.T) {
	var out bytes.Buffer
	t0 := time.Now()
	r := newReport(&out, t0)
	r.line([]byte(`{"Action":"start","Package":"sluice.dev/e2e"}`), t0)
	r.heartbeat(t0.Add(10*time.Second), 30*time.Second)
	if out.Len() != 0 {
		t.Fatalf("heartbeat before the interval: %q", out.String())
	}
	r.heartbeat(t0.Add(31*time.Second), 30*time.Second)
	if !strings.Contains(out.String(), "still running after 31s: sluice.dev/e2e (31s)") {
		t.Fatalf("heartbeat: %q", out.String())
	}
	if code := r.finish(t0.Add(time.Minute)); code != 1 {
		t.Errorf("no test results: exit %d, want 1", code)
	}
}

func TestNonJSONLinesPassThrough(t *testing.T) {
	var out bytes.Buffer
	code := run(strings.NewReader("go: cannot find main module\n"+
		`{"Action":"pass","Package":"p","Test":"TestX"}`+"\n"+`{"Action":"pass","Package":"p","Elapsed":0.5}`+"\n"), &out, 0)
	if code != 0 || !strings.Contains(out.String(), "go: cannot find main module\n") ||
		!strings.Contains(out.String(), "ok  \tp\t0.5s (1 tests)") {
		t.Fatalf("code %d: %q", code, out.String())
	}
}
