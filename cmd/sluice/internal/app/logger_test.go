package app

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
	"sluice.dev/ingest"
	"sluice.dev/watchdog"
)

// A console log written to a file or a pipe carries no ANSI colour codes.
func TestConsoleLogHasNoColourWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(LogConfig{Level: "info", Format: "console"}, &buf)
	log.Info().Str("k", "v").Msg("hello")
	if strings.Contains(buf.String(), "\x1b[") {
		t.Fatalf("ANSI escape in a log written to a buffer: %q", buf.String())
	}

	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log = newLogger(LogConfig{Level: "info", Format: "console"}, f)
	log.Warn().Msg("to a file")
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "\x1b[") || !strings.Contains(string(b), "WRN to a file") {
		t.Fatalf("log file: %q", b)
	}
}

// A command called with the wrong number of arguments prints how to call it.
func TestWrongArgumentCountPrintsUsage(t *testing.T) {
	for _, args := range [][]string{{"trace"}, {"pause"}, {"parked", "show"}} {
		var out, errb bytes.Buffer
		root := newRoot(&out, &errb)
		root.SetArgs(args)
		err := root.Execute()
		if err == nil || !errors.Is(err, errUsage) {
			t.Fatalf("%v: err %v, want errUsage", args, err)
		}
		want := "usage: sluice " + strings.Join(args, " ")
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%v: %q does not contain %q", args, err, want)
		}
	}
}

// `sluice --version` and every service's micro version are one string.
func TestOneVersionEverywhere(t *testing.T) {
	for name, v := range map[string]string{
		"ingest": ingest.ServiceVersion, "enricher": enricher.ServiceVersion, "dispatcher": dispatcher.Version,
		"inbound": inbound.ServiceVersion, "watchdog": watchdog.Version,
	} {
		if v != Version {
			t.Errorf("%s reports %q, sluice --version %q", name, v, Version)
		}
	}
	var out bytes.Buffer
	root := newRoot(&out, &out)
	root.SetArgs([]string{"--version"})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), Version) {
		t.Fatalf("--version: %v %q", err, out.String())
	}
}

// The progress line's webhook numbers add up to what was received.
func TestWebhookProgressAddsUp(t *testing.T) {
	// The run the issue quotes: 89 received, 66 applied, 5 skipped, 0 parked.
	is := inbound.Stats{Received: 89, Duplicates: 13, Applied: 66, Stale: 2, Echo: 2, Unchanged: 1, Parked: 0}
	got := webhookLine(is)
	want := "webhooks received 89 = 13 duplicates + 66 applied + 5 skipped + 0 parked + 5 waiting"
	if got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
	is = inbound.Stats{Received: 10, Applied: 7, Redelivered: 1, Parked: 2}
	if got := webhookLine(is); got != "webhooks received 10 = 0 duplicates + 7 applied + 1 skipped + 2 parked + 0 waiting" {
		t.Fatalf("%q", got)
	}
}

// sluice status: LAST ERROR has a time and says when the lane recovered;
// the CRM latency columns say what they measure.
func TestStatusLastErrorAndCRMColumns(t *testing.T) {
	errAt := time.Now().Add(-time.Minute)
	recAt := errAt.Add(20 * time.Second)
	st := Status{
		Lanes: []LaneStatus{
			{Stage: "dispatcher", Consumer: "dispatcher-000", LastError: "crm answered 500", LastErrorAt: &errAt},
			{Stage: "dispatcher", Partition: 1, Consumer: "dispatcher-001", LastError: "crm answered 503", LastErrorAt: &errAt, RecoveredAt: &recAt},
		},
		CRM: []CRMStatus{{ID: "x", Delivered: 3, Statuses: map[string]uint64{"200": 3}, LatencyP50: 19 * time.Millisecond}},
	}
	var out bytes.Buffer
	if err := writeStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		errAt.Local().Format("15:04:05") + " crm answered 500",
		"recovered " + recAt.Local().Format("15:04:05") + " (was " + errAt.Local().Format("15:04:05") + " crm answered 503)",
		"PRODUCE→CRM P50", "PRODUCE→CRM P99", "CRM ANSWERS", "not the CRM's own answer time",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q", want)
		}
	}
}
