package chaos

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// switchable is the product database's path (meshtest.TCPProxy): Down cuts
// every connection and refuses new ones, Up listens again.
type switchable interface {
	Down()
	Up()
}

// step is one fault of the timeline, started at offset at of the traffic.
type step struct {
	at  time.Duration
	run func(ctx context.Context)
}

// Fault durations the issue asks for.
const (
	crmOutage     = 20 * time.Second
	partitionFor  = 30 * time.Second
	dbOutage      = 30 * time.Second
	restartAfter  = 2 * time.Second  // a killed service is started again after this
	nodeDownFor   = 10 * time.Second // the killed stream leader stays down this long
	timelineTotal = 195 * time.Second
)

// timeline is every fault: each service kill -9'ed twice (and restarted),
// two CRM outages, the dispatch stream's leader killed, the events stream's
// leader partitioned away, the product database cut. The CRM answers 30 %
// 5xx throughout (set before the traffic starts).
func (s *suite) timeline(js jetstream.JetStream, names topology.Names, db switchable) []step {
	kill := func(target string) func(context.Context) {
		return func(context.Context) { s.killService(target) }
	}
	return []step{
		{10 * time.Second, kill("ingest")},
		{15 * time.Second, func(ctx context.Context) { s.crmOutage(ctx, 1) }},
		{25 * time.Second, kill("enricher")},
		{40 * time.Second, kill("dispatcher")},
		{50 * time.Second, kill("inbound")},
		{60 * time.Second, kill("watchdog")},
		{70 * time.Second, func(ctx context.Context) { s.killLeader(ctx, js, names.DispatchStream()) }},
		{100 * time.Second, func(ctx context.Context) { s.partitionLeader(ctx, js, names.EventsStream()) }},
		{110 * time.Second, kill("ingest")},
		{120 * time.Second, kill("enricher")},
		{140 * time.Second, func(context.Context) { s.dbOutage(db) }},
		{150 * time.Second, kill("dispatcher")},
		{160 * time.Second, func(ctx context.Context) { s.crmOutage(ctx, 2) }},
		{175 * time.Second, kill("inbound")},
		{185 * time.Second, kill("watchdog")},
	}
}

// runTimeline runs every step at its offset and returns when all ended.
func (s *suite) runTimeline(ctx context.Context, steps []step) {
	var wg sync.WaitGroup
	for _, st := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.sleepUntil(st.at)
			if ctx.Err() == nil {
				st.run(ctx)
			}
		}()
	}
	wg.Wait()
}

// killService kill -9's a service process and starts it again.
func (s *suite) killService(target string) {
	p := s.svc[target]
	if !p.kill9() {
		s.note("kill -9 %s: it was not running", target)
		return
	}
	s.note("kill -9 %s", target)
	killed := time.Now()
	time.Sleep(restartAfter)
	if err := p.start(); err != nil {
		s.note("restart %s FAILED: %v", target, err)
		return
	}
	if err := s.waitService(target); err != nil {
		s.note("%s not ready after restart: %v", target, err)
		return
	}
	s.note("%s restarted, ready %.1fs after the kill", target, time.Since(killed).Seconds())
}

// crmOutage makes the CRM answer 503 to everything for crmOutage.
func (s *suite) crmOutage(ctx context.Context, n int) {
	if err := s.crm.Outage(ctx, crmOutage); err != nil {
		s.note("CRM outage %d FAILED to start: %v", n, err)
		return
	}
	s.note("CRM outage %d begins (503 to everything for %s)", n, crmOutage)
	time.Sleep(crmOutage)
	s.note("CRM outage %d ends", n)
}

// killLeader kill -9's the node leading stream, keeps it down for
// nodeDownFor, then starts it again (same store).
func (s *suite) killLeader(ctx context.Context, js jetstream.JetStream, stream string) {
	leader, err := streamLeader(ctx, js, stream)
	if err != nil {
		s.note("stream leader kill SKIPPED: %v", err)
		return
	}
	i := s.cluster.node(leader)
	if i == 0 {
		s.note("stream leader kill SKIPPED: unknown leader %q", leader)
		return
	}
	p := s.cluster.nodes[i-1]
	p.kill9()
	killed := time.Now()
	s.note("kill -9 NATS node %s (leader of %s)", leader, stream)
	time.Sleep(nodeDownFor)
	if err := p.start(); err != nil {
		s.note("restart of NATS node %s FAILED: %v", leader, err)
		return
	}
	if err := s.cluster.waitNode(i); err != nil {
		s.note("NATS node %s not healthy after restart: %v", leader, err)
		return
	}
	s.note("NATS node %s restarted (down %s), healthy %.1fs after the kill", leader, nodeDownFor, time.Since(killed).Seconds())
	if l, err := streamLeader(ctx, js, stream); err == nil {
		s.logf("%s is now led by %s", stream, l)
	}
}

// partitionLeader cuts the node leading stream off the network for
// partitionFor.
func (s *suite) partitionLeader(ctx context.Context, js jetstream.JetStream, stream string) {
	leader, err := streamLeader(ctx, js, stream)
	i := s.cluster.node(leader)
	if err != nil || i == 0 {
		i, leader = len(s.cluster.nodes), "n"+itoa(len(s.cluster.nodes))
		s.logf("no leader for %s (%v): partitioning %s", stream, err, leader)
	}
	if err := partition(i); err != nil {
		s.note("partition of %s FAILED: %v", leader, err)
		return
	}
	s.note("partition: NATS node %s (leader of %s) cut off for %s", leader, stream, partitionFor)
	time.Sleep(partitionFor)
	if err := heal(i); err != nil {
		s.note("heal of %s FAILED: %v", leader, err)
		return
	}
	s.note("partition healed: %s back", leader)
}

// dbOutage cuts the product database for dbOutage.
func (s *suite) dbOutage(db switchable) {
	db.Down()
	s.note("product DB outage begins (connections cut, new ones refused for %s)", dbOutage)
	time.Sleep(dbOutage)
	db.Up()
	s.note("product DB outage ends")
}
