package lane_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

var errCRM = errors.New("crm rejected")

// TestParkRedactsReasonAndError: a park reason or error that quotes a CRM's
// answer or a jq error reaches the WARN log, the parked message's headers,
// and the parked-key record without the secrets and e-mail addresses in
// it.
func TestParkRedactsReasonAndError(t *testing.T) {
	names, js := setup(t, 1)
	logs := &meshtest.LogBuffer{}
	const secret, email = "hunter2-PLAIN", "priya@example.in"
	reason := `crm rejected: 422 {"email":"` + email + `","user_password":"` + secret + `","pwd":"` + secret + `"}`
	cause := fmt.Errorf("%w: passcode=%s db_pass: %s; expected an object but got: string (\"%s\")", errCRM, secret, secret, email)
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageDispatcher, Names: names, IsolateKeys: true,
		Logger:  zerolog.New(logs),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome { return lane.Park(reason, cause, nil) }})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	defer g.Stop(context.Background())
	m := names.DispatchSubject(0, "order", "customer:7")
	_, err = js.Publish(context.Background(), m, []byte(`{}`))
	require.NoError(t, err)
	p, err := lane.OpenParked(context.Background(), js, names)
	require.NoError(t, err)
	var keys []lane.ParkedKey
	require.Eventually(t, func() bool {
		keys, err = p.List(context.Background())
		return err == nil && len(keys) == 1
	}, 10*time.Second, 20*time.Millisecond)
	msgs, err := p.Messages(context.Background(), topology.StageDispatcher, "customer:7")
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	// The lane logs the park after it recorded the key (settle): the record
	// can be read a moment before the line is written.
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "event parked") },
		5*time.Second, 5*time.Millisecond, "no 'event parked' line: %s", logs.String())
	shown := logs.String() + fmt.Sprint(msgs[0].Header) + keys[0].Reason
	for _, leak := range []string{secret, email} {
		require.NotContains(t, shown, leak)
	}
	require.Contains(t, msgs[0].Header.Get(lane.HeaderParkReason), `"user_password":"[redacted]"`)
	require.Contains(t, msgs[0].Header.Get(lane.HeaderParkError), "passcode=[redacted]")
}
