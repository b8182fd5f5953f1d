package watchdog_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/watchdog"
)

func TestSilentServiceIsReportedAndRestarted(t *testing.T) {
	e := newEnv(t, 1, 5*time.Second)
	svcNC, _ := meshtest.Connect(t, e.url)
	add := func() micro.Service {
		svc, err := micro.AddService(svcNC, micro.Config{Name: "sluice-test", Version: "1.0.0"})
		require.NoError(t, err)
		return svc
	}
	svc := add()

	var mu sync.Mutex
	var restarted []string
	cfg := e.fastConfig()
	cfg.Services = []string{"sluice-test"}
	cfg.ServiceSilentAfter = 200 * time.Millisecond
	w := e.start(t, cfg, watchdog.Deps{RestartService: func(_ context.Context, name string) error {
		mu.Lock()
		defer mu.Unlock()
		restarted = append(restarted, name)
		return nil
	}})
	require.Eventually(t, func() bool { return w.Stats().Polls >= 10 }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, e.slack.texts(t), "a service answering PING is not silent")

	require.NoError(t, svc.Stop())
	require.Eventually(t, func() bool { return len(e.slack.texts(t)) == 1 }, 5*time.Second, 20*time.Millisecond)
	txt := e.slack.texts(t)[0]
	require.Contains(t, txt, "service_silent")
	require.Contains(t, txt, "sluice-test")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(restarted) > 0 && restarted[0] == "sluice-test"
	}, 5*time.Second, 20*time.Millisecond)

	svc = add()
	defer svc.Stop()
	require.Eventually(t, func() bool { return len(e.slack.texts(t)) == 2 }, 5*time.Second, 20*time.Millisecond)
	require.True(t, strings.Contains(e.slack.texts(t)[1], "answers PING again"), e.slack.texts(t)[1])
	require.GreaterOrEqual(t, w.Stats().Actions[watchdog.ActionRestartService], uint64(1))
}

// The watchdog itself answers PING, STATS and its status endpoint.
func TestWatchdogMicroService(t *testing.T) {
	e := newEnv(t, 1, 5*time.Second)
	w := e.start(t, e.fastConfig(), watchdog.Deps{})
	_, err := e.nc.Request("$SRV.PING."+watchdog.ServiceName, nil, time.Second)
	require.NoError(t, err)
	m, err := e.nc.Request("$SRV.STATS."+watchdog.ServiceName, nil, time.Second)
	require.NoError(t, err)
	require.Contains(t, string(m.Data), `"conditions_open"`)
	m, err = e.nc.Request(w.StatusSubject(), nil, time.Second)
	require.NoError(t, err)
	require.Contains(t, string(m.Data), `"conditions":[]`)
}
