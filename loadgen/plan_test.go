package loadgen_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/loadgen"
	"sluice.dev/mesh/envelope"
)

func ndjson(t *testing.T, p *loadgen.Plan) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, p.WriteNDJSON(&b))
	return b.Bytes()
}

func TestPlanIsDeterministicBySeed(t *testing.T) {
	mk := func(seed int64) *loadgen.Plan {
		p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 2000, Seed: seed})
		require.NoError(t, err)
		return p
	}
	a, b, c := mk(42), mk(42), mk(43)
	require.Equal(t, ndjson(t, a), ndjson(t, b))
	require.Equal(t, a.Expected(), b.Expected())
	require.NotEqual(t, ndjson(t, a), ndjson(t, c))
	require.Len(t, a.Events, 2000)
	require.Equal(t, 2000, bytes.Count(ndjson(t, a), []byte("\n")))
}

func strict(t *testing.T, raw []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v), "%s", raw)
}

func inRange(t *testing.T, r loadgen.Range, id int, what string) {
	t.Helper()
	require.True(t, id >= r.Min && id <= r.Max, "%s %d outside %d..%d", what, id, r.Min, r.Max)
}

// checkPlan verifies every property a plan promises.
func checkPlan(t *testing.T, p *loadgen.Plan) {
	t.Helper()
	cfg := p.Config()
	exp := p.Expected()
	seen := map[string]int{}
	leadsOf := map[int]map[int]bool{} // customer -> leads created
	signedUp := map[string]bool{}
	for i, ev := range p.Events {
		require.NoError(t, ev.Check(), "event %d", i)
		b, err := ev.Marshal()
		require.NoError(t, err)
		_, err = envelope.Decode(b)
		require.NoError(t, err)
		require.Contains(t, cfg.Types, ev.Type)
		require.Equal(t, cfg.Start.Add(time.Duration(i)*cfg.Spacing), ev.OccurredAt)

		seen[ev.Key]++
		require.Equal(t, fmt.Sprintf("%s#%d", ev.Key, seen[ev.Key]), ev.ID, "ids count from 1 per key")
		require.Equal(t, exp[ev.Key][seen[ev.Key]-1], ev.ID)

		if ev.Type != loadgen.TypeCarListed && slices.Contains(cfg.Types, loadgen.TypeCustomerSignedUp) {
			if seen[ev.Key] == 1 {
				require.Equal(t, loadgen.TypeCustomerSignedUp, ev.Type, "a customer's first event is the sign-up")
			}
			signedUp[ev.Key] = true
		}
		var cust int
		switch ev.Type {
		case loadgen.TypeCustomerSignedUp:
			var d loadgen.CustomerSignedUp
			strict(t, ev.Data, &d)
			cust = d.CustomerID
			require.NotEmpty(t, d.Name)
			require.Contains(t, d.Email, "@")
			require.True(t, strings.HasPrefix(d.Phone, "+91 9"))
			require.NotEmpty(t, d.City)
		case loadgen.TypeCustomerUpdated:
			var d loadgen.CustomerUpdated
			strict(t, ev.Data, &d)
			cust = d.CustomerID
			require.NotEqual(t, loadgen.CustomerChanges{}, d.Changes, "at least one change")
		case loadgen.TypeCarListed:
			var d loadgen.CarListed
			strict(t, ev.Data, &d)
			require.Equal(t, "car:"+strconv.Itoa(d.CarID), ev.Key)
			inRange(t, cfg.CarIDs, d.CarID, "car_id")
			inRange(t, cfg.CustomerIDs, d.SellerCustomerID, "seller_customer_id")
			require.Positive(t, d.Price)
			continue
		case loadgen.TypeLeadCreated:
			var d loadgen.LeadCreated
			strict(t, ev.Data, &d)
			cust = d.CustomerID
			inRange(t, cfg.LeadIDs, d.LeadID, "lead_id")
			inRange(t, cfg.CarIDs, d.CarID, "car_id")
			require.Contains(t, loadgen.LeadSources, d.Source)
			if leadsOf[cust] == nil {
				leadsOf[cust] = map[int]bool{}
			}
			leadsOf[cust][d.LeadID] = true
		case loadgen.TypeLeadStatusChanged:
			var d loadgen.LeadStatusChanged
			strict(t, ev.Data, &d)
			cust = d.CustomerID
			inRange(t, cfg.LeadIDs, d.LeadID, "lead_id")
			require.Contains(t, loadgen.LeadStatuses, d.Status)
			if slices.Contains(cfg.Types, loadgen.TypeLeadCreated) {
				require.True(t, leadsOf[cust][d.LeadID], "%s: status of a lead the customer never created", ev.ID)
			}
		case loadgen.TypeAppointmentBooked:
			var d loadgen.AppointmentBooked
			strict(t, ev.Data, &d)
			cust = d.CustomerID
			inRange(t, cfg.LeadIDs, d.LeadID, "lead_id")
			inRange(t, cfg.CarIDs, d.CarID, "car_id")
			at, err := time.Parse(time.RFC3339, d.ScheduledAt)
			require.NoError(t, err)
			require.True(t, at.After(ev.OccurredAt))
			require.NotEmpty(t, d.Location)
			require.Positive(t, d.AppointmentID)
			if slices.Contains(cfg.Types, loadgen.TypeLeadCreated) {
				require.True(t, leadsOf[cust][d.LeadID], "%s: appointment for an unknown lead", ev.ID)
			}
		default:
			t.Fatalf("unexpected type %q", ev.Type)
		}
		require.Equal(t, "customer:"+strconv.Itoa(cust), ev.Key)
		inRange(t, cfg.CustomerIDs, cust, "customer_id")
	}
	require.Len(t, seen, len(exp))
	require.LessOrEqual(t, len(exp), cfg.Keys)
	for k, ids := range exp {
		require.Len(t, ids, seen[k])
	}
	require.ElementsMatch(t, p.Keys(), keysOf(exp))
}

func keysOf(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestPlanProperties(t *testing.T) {
	cases := []struct {
		name string
		cfg  loadgen.PlanConfig
	}{
		{"default mix", loadgen.PlanConfig{Events: 3000, Seed: 1}},
		{"few keys", loadgen.PlanConfig{Events: 500, Keys: 3, Seed: 2}},
		{"simple", loadgen.PlanConfig{Events: 500, Simple: true, Seed: 3}},
		{"leads without lead_created", loadgen.PlanConfig{Events: 300, Seed: 4,
			Types: []string{loadgen.TypeLeadStatusChanged, loadgen.TypeAppointmentBooked}}},
		{"cars only", loadgen.PlanConfig{Events: 200, Types: []string{loadgen.TypeCarListed}}},
		{"sign-ups only", loadgen.PlanConfig{Events: 100, Keys: 5, Types: []string{loadgen.TypeCustomerSignedUp}}},
		{"bigger id ranges", loadgen.PlanConfig{Events: 5000, Keys: 1000, Seed: 5,
			CustomerIDs: loadgen.Range{Min: 1, Max: 5000}, CarIDs: loadgen.Range{Min: 100, Max: 999}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := loadgen.NewPlan(tc.cfg)
			require.NoError(t, err)
			checkPlan(t, p)
		})
	}
}

func TestPlanMix(t *testing.T) {
	p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 5000, Seed: 9})
	require.NoError(t, err)
	counts := p.CountByType()
	for _, typ := range loadgen.AllTypes {
		if typ == loadgen.TypeCustomerSignedUp {
			require.Equal(t, 50, counts[typ], "one sign-up per customer: %v", counts)
			continue
		}
		require.Greater(t, counts[typ], 300, "type %s: %v", typ, counts)
	}
	require.Len(t, p.Keys(), 90, "every customer and car of the sample database")

	simple, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 400, Simple: true})
	require.NoError(t, err)
	require.Equal(t, map[string]int{loadgen.TypeCustomerUpdated: 400}, simple.CountByType())
	require.Len(t, simple.Keys(), 50)

	few, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 400, Keys: 10})
	require.NoError(t, err)
	require.Len(t, few.Keys(), 10)
	cars := 0
	for _, k := range few.Keys() {
		if strings.HasPrefix(k, "car:") {
			cars++
		}
	}
	require.True(t, cars >= 1 && cars <= 3, "cars get their share of keys: %v", few.Keys())
}

func TestPlanExpectedIsACopy(t *testing.T) {
	p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 10})
	require.NoError(t, err)
	e := p.Expected()
	for k := range e {
		e[k][0] = "changed"
	}
	for _, ids := range p.Expected() {
		require.NotEqual(t, "changed", ids[0])
	}
}

func TestPlanConfigValidate(t *testing.T) {
	cases := []struct {
		cfg  loadgen.PlanConfig
		want string
	}{
		{loadgen.PlanConfig{Events: -1}, "loadgen.events"},
		{loadgen.PlanConfig{Keys: 91}, "loadgen.keys"},
		{loadgen.PlanConfig{Keys: 1}, "loadgen.keys"}, // customers and cars need two
		{loadgen.PlanConfig{Keys: 51, Simple: true}, "loadgen.keys"},
		{loadgen.PlanConfig{Types: []string{"order_placed"}}, `loadgen.types[0]: unknown event type "order_placed"`},
		{loadgen.PlanConfig{Types: []string{"car_listed", "car_listed"}}, `loadgen.types[1]`},
		{loadgen.PlanConfig{Simple: true, Types: []string{"car_listed"}}, "loadgen.simple"},
		{loadgen.PlanConfig{CustomerIDs: loadgen.Range{Min: 5, Max: 4}}, "loadgen.customer_ids"},
		{loadgen.PlanConfig{LeadIDs: loadgen.Range{Min: 0, Max: 4}}, "loadgen.lead_ids"},
		{loadgen.PlanConfig{Spacing: -time.Second}, "loadgen.spacing"},
	}
	for _, tc := range cases {
		_, err := loadgen.NewPlan(tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
	d := loadgen.PlanConfig{}.WithDefaults()
	require.Equal(t, 1000, d.Events)
	require.Equal(t, 90, d.Keys)
	require.Equal(t, loadgen.Range{Min: 1, Max: 50}, d.CustomerIDs)
	require.Equal(t, loadgen.Range{Min: 1, Max: 40}, d.CarIDs)
	require.Equal(t, loadgen.Range{Min: 1, Max: 60}, d.LeadIDs)
	require.Equal(t, loadgen.AllTypes, d.Types)
	require.NoError(t, d.Validate())
}
