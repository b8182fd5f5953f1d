package topology_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// A recreated lane consumer takes over an operator's pause that is still
// running: the consumer's latest pause or resume record decides.
func TestOperatorPauseIsTheConsumersLatestRecord(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Now()
	later, earlier := now.Add(time.Hour), now.Add(-time.Minute)
	pause := func(consumer string, until time.Time) topology.AuditRecord {
		return topology.AuditRecord{Action: topology.AuditPause, Consumer: consumer, Until: &until}
	}
	resume := func(consumer string) topology.AuditRecord {
		return topology.AuditRecord{Action: topology.AuditResume, Consumer: consumer}
	}
	many := []topology.AuditRecord{pause("dispatcher-003", later)}
	for range 600 { // more than one fetch
		many = append(many, resume("dispatcher-004"))
	}
	for _, tc := range []struct {
		name    string
		records []topology.AuditRecord
		want    *time.Time
	}{
		{"no records", nil, nil},
		{"paused", []topology.AuditRecord{pause("dispatcher-003", later)}, &later},
		{"paused, then resumed", []topology.AuditRecord{pause("dispatcher-003", later), resume("dispatcher-003")}, nil},
		{"resumed, then paused", []topology.AuditRecord{resume("dispatcher-003"), pause("dispatcher-003", later)}, &later},
		{"another lane paused", []topology.AuditRecord{pause("dispatcher-003", later), resume("dispatcher-004"),
			pause("dispatcher-005", later)}, &later},
		{"pause over", []topology.AuditRecord{pause("dispatcher-003", earlier)}, nil},
		{"only other lanes", []topology.AuditRecord{pause("dispatcher-030", later), pause("enricher-003", later)}, nil},
		{"600 records after it", many, &later},
		{"a replay in between", []topology.AuditRecord{pause("dispatcher-003", later),
			{Action: topology.AuditReplay, Consumer: "dispatcher-003"}}, &later},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := topology.New(meshtest.Topology(4))
			require.NoError(t, names.Ensure(ctx, js))
			for _, r := range tc.records {
				b, err := json.Marshal(r)
				require.NoError(t, err)
				_, err = js.Publish(ctx, names.AuditSubject(r.Action), b)
				require.NoError(t, err)
			}
			got, err := names.OperatorPause(ctx, js, "dispatcher-003", now)
			require.NoError(t, err)
			if tc.want == nil {
				require.Nil(t, got)
				return
			}
			require.NotNil(t, got)
			require.WithinDuration(t, *tc.want, *got, time.Millisecond)
		})
	}
	// No audit stream at all: no pause.
	got, err := topology.New(meshtest.Topology(4)).OperatorPause(ctx, js, "dispatcher-003", now)
	require.NoError(t, err)
	require.Nil(t, got)
}
