package watchdog_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

func TestPausedPastItsDeadlineIsResumed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pauseFor time.Duration // pause deadline from now
		clockAdd time.Duration // how far the watchdog's clock is ahead
		maxPause time.Duration
		want     string
	}{
		// The server still reports a pause whose deadline passed long ago
		// (as seen from the watchdog's clock).
		{"overrun", 30 * time.Minute, 2 * time.Hour, time.Hour, "after its deadline"},
		// A pause far longer than any outlet pause (bogus or forgotten).
		{"longer than max_pause", 2 * time.Hour, 0, time.Minute, "longer than watchdog.max_pause"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 2, 5*time.Second)
			ctx := context.Background()
			e.laneConsumer(t, 1, 1)
			stream := e.names.DispatchStream()
			consumer := e.names.ConsumerName(topology.StageDispatcher, 1)
			_, err := e.js.PauseConsumer(ctx, stream, consumer, time.Now().Add(tc.pauseFor))
			require.NoError(t, err)
			cfg := e.fastConfig()
			cfg.MaxPause = tc.maxPause
			w := e.start(t, cfg, watchdog.Deps{Now: func() time.Time { return time.Now().Add(tc.clockAdd) }})

			require.Eventually(t, func() bool {
				info, err := e.js.Consumer(ctx, stream, consumer)
				return err == nil && !info.CachedInfo().Paused
			}, 5*time.Second, 20*time.Millisecond, "the watchdog did not resume the consumer")
			require.Eventually(t, func() bool {
				for _, txt := range e.slack.texts(t) {
					if strings.Contains(txt, "pause_overrun") && strings.Contains(txt, tc.want) &&
						strings.Contains(txt, consumer) {
						return true
					}
				}
				return false
			}, 5*time.Second, 20*time.Millisecond)
			require.Equal(t, uint64(1), w.Stats().Actions[watchdog.ActionResume])
		})
	}
}

// A lane with work and nobody pulling: the watchdog asks the owning
// service to restart the lane over the control subject, Slack gets ONE
// alert and, once the lane drained, ONE recovery message, however many
// polls run in between.
func TestNoPullerRestartRequestedOneAlertOneRecovery(t *testing.T) {
	e := newEnv(t, 4, 5*time.Second)
	c := e.laneConsumer(t, 3, 3)

	restarts := make(chan int, 100)
	sub, err := watchdog.ServeControl(e.nc, e.names, "dispatcher", func(p int) error {
		restarts <- p
		return nil
	}, zerolog.Nop())
	require.NoError(t, err)
	defer sub.Unsubscribe()

	cfg := e.fastConfig()
	cfg.NoPullerAfter = 200 * time.Millisecond
	w := e.start(t, cfg, watchdog.Deps{})

	select {
	case p := <-restarts:
		require.Equal(t, 3, p)
	case <-time.After(10 * time.Second):
		t.Fatal("no restart request arrived on the control subject")
	}
	// Many polls pass while the condition holds: still one alert.
	time.Sleep(10 * cfg.PollInterval)
	require.Len(t, e.slack.texts(t), 1)
	// The "restarted" lane pulls and drains its work.
	drain(t, c)

	require.Eventually(t, func() bool { return len(e.slack.texts(t)) >= 2 }, 5*time.Second, 20*time.Millisecond)
	require.Never(t, func() bool { return len(e.slack.texts(t)) > 2 }, 20*cfg.PollInterval, 20*time.Millisecond)
	texts := e.slack.texts(t)
	require.Contains(t, texts[0], "no_puller")
	require.Contains(t, texts[0], "dispatcher-003")
	require.Contains(t, texts[0], ":rotating_light:")
	require.Contains(t, texts[1], ":white_check_mark:")
	require.Contains(t, texts[1], "dispatcher-003")

	hooks := e.hook.alerts(t)
	require.Len(t, hooks, 2)
	require.Equal(t, watchdog.StateOpen, hooks[0].State)
	require.Equal(t, watchdog.StateRecovered, hooks[1].State)
	require.Equal(t, "no_puller/dispatcher-003", hooks[1].Key)

	st := w.Stats()
	require.GreaterOrEqual(t, st.Actions[watchdog.ActionRestart], uint64(1))
	require.Zero(t, st.ConditionsOpen)
	require.Zero(t, st.AlertsFailed)
}

// A client holds the head without acking (long AckWait) while its pull
// request waits: no progress, not paused, someone pulling = stalled.
func TestStalledLaneIsRestarted(t *testing.T) {
	e := newEnv(t, 2, time.Minute)
	c := e.laneConsumer(t, 0, 2)
	it, err := c.Messages(jetstream.PullPriorityGroup(topology.LanePriorityGroup))
	require.NoError(t, err)
	defer it.Stop()
	held, err := it.Next()
	require.NoError(t, err)

	var restarted atomic.Int32
	release := make(chan struct{}, 1)
	sub, err := watchdog.ServeControl(e.nc, e.names, "dispatcher", func(p int) error {
		if p != 0 {
			return watchdog.ErrNotOwner
		}
		if restarted.Add(1) == 1 {
			release <- struct{}{}
		}
		return nil
	}, zerolog.Nop())
	require.NoError(t, err)
	defer sub.Unsubscribe()

	cfg := e.fastConfig()
	cfg.StallAfter = 300 * time.Millisecond
	e.start(t, cfg, watchdog.Deps{})

	select {
	case <-release:
	case <-time.After(10 * time.Second):
		t.Fatal("stall not detected")
	}
	require.Eventually(t, func() bool { return len(e.slack.texts(t)) == 1 }, 5*time.Second, 20*time.Millisecond)
	require.Contains(t, e.slack.texts(t)[0], "stall")
	// The restarted loop settles the head and the rest.
	require.NoError(t, held.DoubleAck(context.Background()))
	next, err := it.Next()
	require.NoError(t, err)
	require.NoError(t, next.DoubleAck(context.Background()))

	require.Eventually(t, func() bool { return len(e.slack.texts(t)) == 2 }, 5*time.Second, 20*time.Millisecond)
	texts := e.slack.texts(t)
	require.Contains(t, texts[0], "stall/dispatcher-000")
	require.Contains(t, texts[1], ":white_check_mark:")
}

func TestDeletedLaneConsumerAndStreamAreRecreated(t *testing.T) {
	e := newEnv(t, 2, 5*time.Second)
	ctx := context.Background()
	e.laneConsumer(t, 0, 0)
	w := e.start(t, e.fastConfig(), watchdog.Deps{})
	require.Eventually(t, func() bool { return w.Stats().Polls >= 2 }, 5*time.Second, 10*time.Millisecond)

	consumer := e.names.ConsumerName(topology.StageDispatcher, 0)
	require.NoError(t, e.js.DeleteConsumer(ctx, e.names.DispatchStream(), consumer))
	require.Eventually(t, func() bool {
		_, err := e.js.Consumer(ctx, e.names.DispatchStream(), consumer)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "consumer not recreated")

	require.NoError(t, e.js.DeleteStream(ctx, e.names.ParkedStream()))
	require.Eventually(t, func() bool {
		_, err := e.js.Stream(ctx, e.names.ParkedStream())
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "stream not recreated")
	require.Eventually(t, func() bool {
		st := w.Stats()
		return st.Actions[watchdog.ActionRecreateConsumer] >= 1 && st.Actions[watchdog.ActionRecreateStream] >= 1
	}, 5*time.Second, 20*time.Millisecond)
	require.Zero(t, w.Stats().Actions[watchdog.ActionRecreateStream+"_failed"])
}

// partialListJS is a JetStream whose consumer lists leave out one consumer,
// as a cluster's stream leader does when that consumer's leader does not
// answer in time ("Did not receive all consumer info results").
type partialListJS struct {
	jetstream.JetStream
	omit string
}

func (j partialListJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := j.JetStream.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return partialListStream{Stream: s, omit: j.omit}, nil
}

type partialListStream struct {
	jetstream.Stream
	omit string
}

func (s partialListStream) ListConsumers(ctx context.Context) jetstream.ConsumerInfoLister {
	return &partialLister{in: s.Stream.ListConsumers(ctx), omit: s.omit}
}

type partialLister struct {
	in   jetstream.ConsumerInfoLister
	omit string
}

func (l *partialLister) Info() <-chan *jetstream.ConsumerInfo {
	out := make(chan *jetstream.ConsumerInfo)
	go func() {
		defer close(out)
		for ci := range l.in.Info() {
			if ci.Name != l.omit {
				out <- ci
			}
		}
	}()
	return out
}

func (l *partialLister) Err() error { return l.in.Err() }

// A lane consumer left out of a (cluster's partial) consumer list but
// still on the server is not "missing": no recreate action, no alert.
func TestLaneConsumerLeftOutOfAPartialListIsNotMissing(t *testing.T) {
	e := newEnv(t, 2, 5*time.Second)
	e.laneConsumer(t, 0, 3)
	e.laneConsumer(t, 1, 0)
	consumer := e.names.ConsumerName(topology.StageDispatcher, 0)
	js := &switchJS{JetStream: e.js}
	w := e.start(t, e.fastConfig(), watchdog.Deps{JS: js})
	// Seen once in full, then left out of every list.
	require.Eventually(t, func() bool { return w.Stats().Polls >= 2 }, 5*time.Second, 10*time.Millisecond)
	js.partial(consumer)
	polls := w.Stats().Polls
	require.Eventually(t, func() bool { return w.Stats().Polls >= polls+10 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, w.Stats().Actions[watchdog.ActionRecreateConsumer], "recreated a consumer that exists")
	for _, a := range e.hook.alerts(t) {
		require.NotEqual(t, watchdog.CondConsumerGone, a.Condition, "alerted on a consumer that exists: %s", a.Text)
	}
}

// switchJS starts to list partially once partial is called.
type switchJS struct {
	jetstream.JetStream
	mu   sync.Mutex
	omit string
}

func (j *switchJS) partial(name string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.omit = name
}

func (j *switchJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	j.mu.Lock()
	omit := j.omit
	j.mu.Unlock()
	if omit == "" {
		return j.JetStream.Stream(ctx, name)
	}
	return partialListJS{JetStream: j.JetStream, omit: omit}.Stream(ctx, name)
}

// A recreated lane consumer starts after the lane's fence, not at the
// start of the stream (which would re-send the events stream's history); a
// dispatch lane (work queue: applied messages are gone) starts at the
// beginning, the only start a work queue accepts.
func TestDeletedLaneConsumerIsRecreatedAfterFence(t *testing.T) {
	e := newEnv(t, 2, 5*time.Second)
	ctx := context.Background()
	stream, filter := e.names.StageFilter(topology.StageEnricher, 0)
	_, err := e.js.CreateOrUpdateConsumer(ctx, stream, e.names.LaneConsumerConfig(topology.StageEnricher, 0, filter))
	require.NoError(t, err)
	e.laneConsumer(t, 0, 0)
	kv, err := e.js.KeyValue(ctx, e.names.FenceBucket())
	require.NoError(t, err)
	for _, stage := range []topology.Stage{topology.StageEnricher, topology.StageDispatcher} {
		stream, _ := e.names.StageFilter(stage, 0)
		s, err := e.js.Stream(ctx, stream)
		require.NoError(t, err)
		_, err = kv.Put(ctx, topology.FenceKey(stage, 0), topology.Fence{Seq: 3, StreamCreated: s.CachedInfo().Created}.Marshal())
		require.NoError(t, err)
	}
	// An operator paused the enricher lane: the recreated consumer takes the
	// pause over (topology.Names.OperatorPause).
	until := time.Now().Add(30 * time.Minute).UTC() // within watchdog.max_pause
	rec, err := json.Marshal(watchdog.AuditRecord{Action: watchdog.AuditPause, Consumer: e.names.ConsumerName(topology.StageEnricher, 0),
		Until: &until, By: "test", At: time.Now(), Source: "cli"})
	require.NoError(t, err)
	_, err = e.js.Publish(ctx, e.names.AuditSubject(watchdog.AuditPause), rec)
	require.NoError(t, err)
	w := e.start(t, e.fastConfig(), watchdog.Deps{})
	require.Eventually(t, func() bool { return w.Stats().Polls >= 2 }, 5*time.Second, 10*time.Millisecond)

	for _, tc := range []struct {
		stage  topology.Stage
		policy jetstream.DeliverPolicy
		start  uint64
		memory bool // in memory: lost with a NATS restart, recreated without an alert
	}{
		{topology.StageEnricher, jetstream.DeliverByStartSequencePolicy, 4, false},
		{topology.StageDispatcher, jetstream.DeliverAllPolicy, 0, true},
	} {
		stream, _ := e.names.StageFilter(tc.stage, 0)
		consumer := e.names.ConsumerName(tc.stage, 0)
		require.NoError(t, e.js.DeleteConsumer(ctx, stream, consumer))
		var c jetstream.Consumer
		require.Eventually(t, func() bool {
			c, err = e.js.Consumer(ctx, stream, consumer)
			return err == nil
		}, 5*time.Second, 20*time.Millisecond, "%s not recreated", consumer)
		cfg := c.CachedInfo().Config
		require.Equal(t, tc.policy, cfg.DeliverPolicy, consumer)
		require.Equal(t, tc.start, cfg.OptStartSeq, consumer)
		require.Equal(t, jetstream.PriorityPolicyPinned, cfg.PriorityPolicy, consumer)
		require.Equal(t, tc.memory, cfg.MemoryStorage, consumer)
		if tc.stage == topology.StageEnricher {
			require.NotNil(t, cfg.PauseUntil, "the operator's pause was not taken over")
			require.WithinDuration(t, until, *cfg.PauseUntil, time.Millisecond)
		} else {
			require.Nil(t, cfg.PauseUntil, consumer)
		}
	}
	require.Zero(t, w.Stats().Actions[watchdog.ActionRecreateConsumer+"_failed"])
	require.Equal(t, uint64(2), w.Stats().Actions[watchdog.ActionRecreateConsumer])
	// The enricher's deletion is news; the dispatcher's in-memory consumer
	// is lost with every NATS restart: recreated, no alert. Two more polls
	// and both missing consumers have been handled (raised or not).
	polls := w.Stats().Polls
	require.Eventually(t, func() bool { return w.Stats().Polls >= polls+2 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(2), w.Stats().AlertsRaised,
		"two alerts, the enricher consumer's: missing, then paused (the operator's pause): %q", e.slack.texts(t))
	enricher, dispatcher := e.names.ConsumerName(topology.StageEnricher, 0), e.names.ConsumerName(topology.StageDispatcher, 0)
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(e.slack.texts(t), func(s string) bool { return strings.Contains(s, "consumer_missing/"+enricher) })
	}, 5*time.Second, 20*time.Millisecond, "no alert for the deleted enricher consumer")
	for _, txt := range e.slack.texts(t) {
		require.NotContains(t, txt, dispatcher, "alerted on the recreated in-memory consumer")
	}
}

// parked_rising follows the events the lanes park for the operator (their
// "parked" alerts), not the parked stream's count: the copies of a key
// held for a retry come and go in the same stream and raise nothing.
func TestParkedRisingAlerts(t *testing.T) {
	e := newEnv(t, 2, 5*time.Second)
	ctx := context.Background()
	cfg := e.fastConfig()
	cfg.ParkedRising = 200 * time.Millisecond
	w := e.start(t, cfg, watchdog.Deps{})
	require.Eventually(t, func() bool { return w.Stats().Polls >= 2 }, 5*time.Second, 10*time.Millisecond)

	// A held copy (a key stepped aside for a retry): no alert.
	held := nats.NewMsg(e.names.ParkedSubject(topology.StageDispatcher, "t", "held"))
	held.Header.Set(lane.HeaderHeld, "true")
	held.Data = []byte(`{}`)
	_, err := e.js.PublishMsg(ctx, held)
	require.NoError(t, err)
	polls := w.Stats().Polls
	require.Eventually(t, func() bool { return w.Stats().Polls >= polls+3 }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, e.slack.texts(t), "a held copy raised an alert")

	// An event parked for the operator: its copy and the lane's alert.
	_, err = e.js.Publish(ctx, e.names.ParkedSubject(topology.StageDispatcher, "t", "k"), []byte(`{}`))
	require.NoError(t, err)
	b, err := json.Marshal(lane.Alert{Kind: "parked", Stage: topology.StageDispatcher, Consumer: "c",
		Subject: "sluice.dispatch.0.t.k", Reason: "crm rejected: 422"})
	require.NoError(t, err)
	_, err = e.js.Publish(ctx, e.names.AlertSubject("parked"), b)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(e.slack.texts(t)) == 2 }, 5*time.Second, 20*time.Millisecond)
	texts := e.slack.texts(t)
	require.Contains(t, texts[0], "parked_rising")
	require.Contains(t, texts[0], "1 event(s) parked")
	require.Contains(t, texts[0], "crm rejected: 422")
	require.Contains(t, texts[1], "no new parked events")
}

// A head that is nak'd again and again without the ack floor moving is a
// redelivery loop; acking it recovers.
func TestRedeliveryLoopIsReported(t *testing.T) {
	e := newEnv(t, 1, 5*time.Second)
	c := e.laneConsumer(t, 0, 1)
	cfg := e.fastConfig()
	cfg.RedeliveryLoop = 3
	e.start(t, cfg, watchdog.Deps{})

	ctx, cancel := context.WithCancel(context.Background())
	var ack atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			batch, err := c.Fetch(1, jetstream.FetchMaxWait(100*time.Millisecond), jetstream.FetchPriorityGroup(topology.LanePriorityGroup))
			if err != nil {
				continue
			}
			for m := range batch.Messages() {
				if ack.Load() {
					_ = m.DoubleAck(ctx)
				} else {
					_ = m.Nak()
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool { return len(e.slack.texts(t)) == 1 }, 5*time.Second, 20*time.Millisecond)
	require.Contains(t, e.slack.texts(t)[0], "redelivery_loop/dispatcher-000")
	ack.Store(true)
	require.Eventually(t, func() bool { return len(e.slack.texts(t)) == 2 }, 5*time.Second, 20*time.Millisecond)
	require.Contains(t, e.slack.texts(t)[1], ":white_check_mark:")
}
