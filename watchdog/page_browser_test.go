package watchdog_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

// chromiumPath is Debian's chromium.
const chromiumPath = "/usr/bin/chromium"

// browser starts headless chromium for one test, or skips the test when it
// is not installed (unless SLUICE_TEST_CHROMIUM=1 demands it).
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("SLUICE_TEST_CHROMIUM") == "1" {
			t.Fatalf("SLUICE_TEST_CHROMIUM=1 but %s is missing: apt-get install -y chromium", chromiumPath)
		}
		t.Skipf("headless-browser test skipped: %s not found (apt-get install -y chromium; set SLUICE_TEST_CHROMIUM=1 to make this a failure)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelT)
	require.NoError(t, chromedp.Do(ctx), "start chromium")
	return ctx
}

func TestPageInBrowser(t *testing.T) {
	ctx := browser(t)
	f := newPageFixture(t, pageToken)
	f.parkKey("K", 2)
	lane0 := f.names.ConsumerName(topology.StageEnricher, 0)
	stream, _ := f.names.StageFilter(topology.StageEnricher, 0)
	_, err := f.js.PauseConsumer(context.Background(), stream, lane0, time.Now().Add(time.Minute))
	require.NoError(t, err)

	paused := chromedp.CSS(`#lanes .lane[data-consumer="` + lane0 + `"][data-state="paused"]`)
	replay := chromedp.CSS(`#parked tr[data-key="K"] button.replay`)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.srv.URL+"/"),
		chromedp.WaitVisible(paused),
		chromedp.WaitVisible(chromedp.CSS(`#parked tr[data-key="K"]`)),
	))
	laneText, err := chromedp.Run(ctx, chromedp.Text(paused))
	require.NoError(t, err)
	require.Contains(t, laneText, "paused")

	// Resume the lane so the replayed events can run, then sign in and
	// click Replay.
	_, err = f.js.ResumeConsumer(context.Background(), stream, lane0)
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`#token`), pageToken),
		chromedp.Click(chromedp.CSS(`#save-token`)),
		chromedp.WaitVisible(replay),
		chromedp.Click(replay),
	))
	require.Eventually(t, func() bool {
		_, err := f.admin.Get(context.Background(), topology.StageEnricher, "K")
		return err != nil
	}, 20*time.Second, 50*time.Millisecond, "the Replay click did not unblock K")
	_, err = f.admin.Get(context.Background(), topology.StageEnricher, "K")
	require.ErrorIs(t, err, lane.ErrNotParked)
	require.Equal(t, []string{"K-0", "K-1"}, f.seenOf("K"))
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#parked tbody td.muted`))))
	msg, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#msg`)))
	require.NoError(t, err)
	require.Contains(t, msg, "Replay enricher key K done")
	require.Len(t, f.audits("replay"), 1)
}

// fakeDispatcher answers $SRV.STATS.sluice-dispatcher like the dispatcher
// does (delivered, crm_statuses), counting what the fixture's lanes handled
// as delivered: the watchdog reads the real protocol.
func fakeDispatcher(t *testing.T, f *pageFixture) {
	t.Helper()
	svc, err := micro.AddService(f.nc, micro.Config{Name: "sluice-dispatcher", Version: "0.1.0",
		StatsHandler: func(*micro.Endpoint) any {
			f.mu.Lock()
			n := uint64(len(f.seen))
			f.mu.Unlock()
			return map[string]any{"delivered": n, "crm_statuses": map[string]uint64{"200": n, "503": n / 10, "timeout": 1}}
		}})
	require.NoError(t, err)
	require.NoError(t, svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(nil) })))
	t.Cleanup(func() { _ = svc.Stop() })
}

// layout reports what the page looks like at the current width.
type layout struct {
	ScrollWidth, ClientWidth int
	Overflowing              []string // elements whose right edge is past the viewport
	LaneHeights              []int
	Times                    []string
	ChartWidth               int
}

const layoutJS = `(() => {
  const de = document.documentElement, out = {ScrollWidth: de.scrollWidth, ClientWidth: de.clientWidth,
    Overflowing: [], LaneHeights: [], Times: [], ChartWidth: 0};
  for (const e of document.body.querySelectorAll("*")) {
    const r = e.getBoundingClientRect();
    if (r.width > 0 && r.right > de.clientWidth + 1) out.Overflowing.push(e.tagName + "#" + e.id + "." + e.getAttribute("class"));
  }
  for (const l of document.querySelectorAll("#lanes .lane")) out.LaneHeights.push(l.offsetHeight);
  for (const t of document.querySelectorAll("time")) out.Times.push(t.textContent);
  out.Times.push(document.querySelector("#updated").textContent.replace(/^updated /, "").replace(/ ·.*/, ""));
  out.ChartWidth = document.querySelector("#chart").scrollWidth;
  return out;
})()`

// series returns the values of one chart series (data-values).
func series(t *testing.T, ctx context.Context, name string) []float64 {
	t.Helper()
	csv, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`(document.querySelector('#chart polyline[data-series="`+name+`"]') || {getAttribute: () => ""}).getAttribute("data-values") || ""`))
	require.NoError(t, err)
	var out []float64
	for _, v := range strings.Split(csv, ",") {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out = append(out, f)
		}
	}
	return out
}

// The chart of the last 15 minutes has points and shows the delivered
// rate rising once events flow; the page fits 1280 px and 400 px without
// horizontal scroll, its lane cells are of one height, and every time is
// in the one format. Screenshots: $SLUICE_SCREENSHOT_DIR (or the test's
// temp dir).
func TestPageChartAndLayoutInBrowser(t *testing.T) {
	ctx := browser(t)
	f := newPageFixtureWith(t, pageToken, 16, func(c *watchdog.Config) { c.PollInterval = 250 * time.Millisecond })
	fakeDispatcher(t, f)
	f.parkKey("K", 1) // a parked key and an alert: rows with times
	shots := os.Getenv("SLUICE_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(shots, 0o755))

	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(1280, 1000),
		chromedp.Navigate(f.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#lanes .lane[data-consumer]`)),
	))
	points := func() int {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#chart").getAttribute("data-points") || "0"`))
		require.NoError(t, err)
		v, _ := strconv.Atoi(n)
		return v
	}
	require.Eventually(t, func() bool { return points() >= 3 }, 20*time.Second, 200*time.Millisecond, "the chart gets points")
	for _, v := range series(t, ctx, "delivered") {
		require.Zero(t, v, "nothing delivered yet")
	}

	for k := 0; k < 40; k++ {
		f.publish(fmt.Sprintf("c%02d", k), 0, 10)
	}
	var peak float64
	require.Eventually(t, func() bool {
		peak = 0
		for _, v := range series(t, ctx, "delivered") {
			peak = max(peak, v)
		}
		return peak > 0
	}, 30*time.Second, 250*time.Millisecond, "the delivered rate rises after events are sent")
	require.NotEmpty(t, series(t, ctx, "accepted"))
	require.NotEmpty(t, series(t, ctx, "2xx"), "CRM answers by class")
	require.NotEmpty(t, series(t, ctx, string(topology.StageEnricher)), "lag per stage")
	require.NotEmpty(t, series(t, ctx, "paused"))
	t.Logf("delivered rate peaked at %.1f/s", peak)

	timeRe := regexp.MustCompile(`^(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d$`)
	for _, width := range []int64{1280, 400} {
		require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(width, 1000)))
		var l layout
		require.Eventually(t, func() bool {
			var err error
			l, err = chromedp.Run(ctx, chromedp.Evaluate[layout](layoutJS))
			require.NoError(t, err)
			return l.ChartWidth <= l.ClientWidth // the chart re-rendered for the width
		}, 10*time.Second, 100*time.Millisecond)
		require.LessOrEqual(t, l.ScrollWidth, l.ClientWidth, "%d px: horizontal scroll", width)
		require.Empty(t, l.Overflowing, "%d px: elements past the right edge", width)
		require.GreaterOrEqual(t, len(l.LaneHeights), 16)
		for _, h := range l.LaneHeights {
			require.Equal(t, l.LaneHeights[0], h, "%d px: lane cells of uneven height %v", width, l.LaneHeights)
		}
		require.NotEmpty(t, l.Times)
		for _, tm := range l.Times {
			require.Regexp(t, timeRe, tm, "%d px: one time format", width)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(shots, fmt.Sprintf("status-page-%d.png", width)), png, 0o644))
	}
}
