// Command testreport turns `go test -json` into what `make test` prints: one
// go-test-style line per package as it finishes ("ok  \tpkg\t12.3s (40
// tests, 2 skipped)"), the full output of every failing test, a "still
// running" line when nothing finished for a while, and at the end every
// skipped test with its reason and a gotestsum-style closing line
// ("DONE 523 tests, 15 skipped, 0 failures in 295.2s").
//
//	go test -json ./... | go run ./e2e/cmd/testreport
//
// It exits 1 when a test or a build failed (or the input had no test
// results at all), so `set -o pipefail` is not even needed. Lines that are
// not JSON (go test's own errors) are passed through.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time        time.Time
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string
}

type testKey struct{ pkg, test string }

// report accumulates the stream; its methods are called from one reader
// goroutine and the heartbeat, under mu.
type report struct {
	mu      sync.Mutex
	out     io.Writer
	start   time.Time
	output  map[testKey][]string // per test (Test "" = the package's own lines)
	running map[string]time.Time // packages started, not finished
	counts  map[string]*pkgCount
	skipped []skip
	tests   int
	failed  []testKey
	builds  []string // packages whose build failed
	last    time.Time
}

type pkgCount struct{ tests, skipped, failed int }

type skip struct {
	key    testKey
	reason string
}

func newReport(out io.Writer, now time.Time) *report {
	return &report{out: out, start: now, last: now, output: map[testKey][]string{},
		running: map[string]time.Time{}, counts: map[string]*pkgCount{}}
}

func (r *report) count(pkg string) *pkgCount {
	c := r.counts[pkg]
	if c == nil {
		c = &pkgCount{}
		r.counts[pkg] = c
	}
	return c
}

// line handles one input line.
func (r *report) line(b []byte, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var e event
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &e) != nil {
		fmt.Fprintf(r.out, "%s\n", b)
		return
	}
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "build-output":
		fmt.Fprint(r.out, e.Output)
	case "build-fail":
		r.builds = append(r.builds, e.ImportPath)
	case "start":
		r.running[e.Package] = now
	case "output":
		if strings.HasPrefix(e.Output, "=== ") {
			return
		}
		r.output[k] = append(r.output[k], e.Output)
	case "pass", "fail", "skip":
		if e.Test != "" {
			r.testDone(k, e.Action)
			return
		}
		r.packageDone(e, now)
	}
}

func (r *report) testDone(k testKey, action string) {
	c := r.count(k.pkg)
	c.tests++
	r.tests++
	switch action {
	case "skip":
		c.skipped++
		r.skipped = append(r.skipped, skip{key: k, reason: skipReason(r.output[k])})
		delete(r.output, k)
	case "fail":
		c.failed++
		r.failed = append(r.failed, k)
	default:
		delete(r.output, k)
	}
}

// skipReason is what the test said when it skipped: its log lines without
// the "--- SKIP" line and the file:line prefixes.
func skipReason(lines []string) string {
	var parts []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		if i := strings.Index(l, ".go:"); i > 0 && !strings.Contains(l[:i], " ") {
			if j := strings.Index(l[i:], ": "); j > 0 {
				l = l[i+j+2:]
			}
		}
		parts = append(parts, l)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " ")
}

// summaryLine reports whether l is go test's own PASS / FAIL / ok line of
// a package, which the report prints in its own form.
func summaryLine(l string) bool {
	f := strings.Fields(l)
	return len(f) > 0 && (f[0] == "PASS" || f[0] == "FAIL" || f[0] == "ok")
}

func (r *report) packageDone(e event, now time.Time) {
	delete(r.running, e.Package)
	r.last = now
	c := r.count(e.Package)
	if e.Action == "skip" && c.tests == 0 {
		return // [no test files]
	}
	if e.Action == "fail" {
		for _, k := range r.failed {
			if k.pkg == e.Package {
				for _, l := range r.output[k] { // ends with its "--- FAIL: Test (…)" line
					fmt.Fprint(r.out, l)
				}
			}
		}
		for _, l := range r.output[testKey{pkg: e.Package}] {
			if !summaryLine(l) {
				fmt.Fprint(r.out, l)
			}
		}
		if c.failed == 0 {
			r.failed = append(r.failed, testKey{pkg: e.Package}) // a panic, a timeout, goleak, TestMain
		}
	}
	for k := range r.output {
		if k.pkg == e.Package {
			delete(r.output, k)
		}
	}
	status := "ok  "
	if e.Action == "fail" {
		status = "FAIL"
	}
	detail := fmt.Sprintf("%d tests", c.tests)
	if c.skipped > 0 {
		detail += fmt.Sprintf(", %d skipped", c.skipped)
	}
	if c.failed > 0 {
		detail += fmt.Sprintf(", %d failed", c.failed)
	}
	fmt.Fprintf(r.out, "%s\t%s\t%.1fs (%s)\n", status, e.Package, e.Elapsed, detail)
}

// heartbeat prints the packages still running when nothing finished for
// every.
func (r *report) heartbeat(now time.Time, every time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.running) == 0 || now.Sub(r.last) < every {
		return
	}
	r.last = now
	pkgs := make([]string, 0, len(r.running))
	for p, since := range r.running {
		pkgs = append(pkgs, fmt.Sprintf("%s (%s)", p, now.Sub(since).Round(time.Second)))
	}
	sort.Strings(pkgs)
	fmt.Fprintf(r.out, "... still running after %s: %s\n", now.Sub(r.start).Round(time.Second), strings.Join(pkgs, ", "))
}

// finish prints the skipped tests and the closing line; it returns the
// exit code.
func (r *report) finish(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.skipped) > 0 {
		fmt.Fprintf(r.out, "\nSkipped tests (%d):\n", len(r.skipped))
		for _, s := range r.skipped {
			fmt.Fprintf(r.out, "  %s %s: %s\n", s.key.pkg, s.key.test, s.reason)
		}
	}
	if len(r.failed) > 0 || len(r.builds) > 0 {
		fmt.Fprintln(r.out, "\nFailed:")
		for _, k := range r.failed {
			if k.test == "" {
				fmt.Fprintf(r.out, "  %s (the package, see its output above)\n", k.pkg)
			} else {
				fmt.Fprintf(r.out, "  %s %s\n", k.pkg, k.test)
			}
		}
		for _, p := range r.builds {
			fmt.Fprintf(r.out, "  %s [build failed]\n", p)
		}
	}
	fails := len(r.failed) + len(r.builds)
	fmt.Fprintf(r.out, "\nDONE %d tests, %d skipped, %d failures in %.1fs\n", r.tests, len(r.skipped), fails,
		now.Sub(r.start).Seconds())
	if fails > 0 || r.tests == 0 {
		return 1
	}
	return 0
}

func run(in io.Reader, out io.Writer, every time.Duration) int {
	r := newReport(out, time.Now())
	done := make(chan struct{})
	defer close(done)
	if every > 0 {
		go func() {
			t := time.NewTicker(every / 3)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case now := <-t.C:
					r.heartbeat(now, every)
				}
			}
		}()
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		r.line(sc.Bytes(), time.Now())
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(out, "testreport: reading go test -json:", err)
		return 1
	}
	return r.finish(time.Now())
}

func main() {
	every := flag.Duration("heartbeat", 30*time.Second, "print the running packages when none finished for this long (0: never)")
	flag.Parse()
	os.Exit(run(os.Stdin, os.Stdout, *every))
}
