package watchdog_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
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
