package loadgen

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"sluice.dev/mesh/envelope"
)

type customer struct {
	id                       int
	key                      string
	n                        int
	name, email, phone, city string
	leads                    []*lead
}

type lead struct {
	id, car int
	status  int // index into LeadStatuses
}

func (l *lead) open() bool { return l.status < 4 }

type car struct {
	id     int
	key    string
	n      int
	seller int
	price  int
}

// gen generates events deterministically from one seeded source. It never
// iterates a map.
type gen struct {
	cfg      PlanConfig
	rng      *rand.Rand
	types    []string
	cum      []int // cumulative weights of types
	inactive []*customer
	active   []*customer
	cars     []*car
	nextLead int
	nextAppt int
}

func newGen(cfg PlanConfig) *gen {
	g := &gen{cfg: cfg, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x10adc0de))}
	total, custW, carW := 0, 0, 0
	for _, t := range AllTypes { // fixed order, not cfg.Types order
		if !cfg.has(t) {
			continue
		}
		w := defaultWeights[t]
		total += w
		g.types = append(g.types, t)
		g.cum = append(g.cum, total)
		if t == TypeCarListed {
			carW += w
		} else {
			custW += w
		}
	}
	nCar, nCust := 0, 0
	switch {
	case custW == 0:
		nCar = cfg.Keys
	case carW == 0:
		nCust = cfg.Keys
	default:
		nCar = (cfg.Keys*carW + total/2) / total
		nCar = max(1, min(nCar, cfg.CarIDs.Len(), cfg.Keys-1))
		nCust = min(cfg.Keys-nCar, cfg.CustomerIDs.Len())
		nCar = cfg.Keys - nCust
	}
	for _, id := range g.pick(cfg.CustomerIDs, nCust) {
		c := &customer{id: id, key: "customer:" + strconv.Itoa(id)}
		g.profile(c)
		if cfg.has(TypeCustomerSignedUp) {
			g.inactive = append(g.inactive, c)
		} else {
			g.active = append(g.active, c)
		}
	}
	for _, id := range g.pick(cfg.CarIDs, nCar) {
		g.cars = append(g.cars, &car{id: id, key: "car:" + strconv.Itoa(id),
			seller: g.inRange(cfg.CustomerIDs), price: g.price()})
	}
	return g
}

// pick returns n distinct ids of r, ascending.
func (g *gen) pick(r Range, n int) []int {
	perm := g.rng.Perm(r.Len())[:n]
	slices.Sort(perm)
	for i := range perm {
		perm[i] += r.Min
	}
	return perm
}

func (g *gen) inRange(r Range) int { return r.Min + g.rng.IntN(r.Len()) }

func oneOf[T any](g *gen, xs []T) T { return xs[g.rng.IntN(len(xs))] }

func (g *gen) price() int { return (150 + g.rng.IntN(2350)) * 1000 }

func (g *gen) profile(c *customer) {
	first, last := oneOf(g, firstNames), oneOf(g, lastNames)
	c.name = first + " " + last
	c.email = fmt.Sprintf("%s.%s%d@example.com", strings.ToLower(first), strings.ToLower(last), c.id)
	c.phone = g.phone()
	c.city = oneOf(g, cities)
}

func (g *gen) phone() string { return fmt.Sprintf("+91 9%09d", g.rng.IntN(1_000_000_000)) }

func (g *gen) pickType() string {
	x := g.rng.IntN(g.cum[len(g.cum)-1])
	for i, c := range g.cum {
		if x < c {
			return g.types[i]
		}
	}
	return g.types[len(g.types)-1]
}

// next generates the next event, occurring at at.
func (g *gen) next(at time.Time) (*envelope.Envelope, error) {
	t := g.pickType()
	if t == TypeCarListed {
		c := oneOf(g, g.cars)
		if c.n > 0 && g.rng.IntN(2) == 0 { // relisted at a new price
			c.price = g.price()
		}
		c.n++
		return g.envelope(c.key, c.n, t, at, CarListed{CarID: c.id, SellerCustomerID: c.seller, Price: c.price})
	}
	if t == TypeCustomerSignedUp && len(g.inactive) == 0 {
		if len(g.types) > 1 || g.cfg.has(TypeCarListed) {
			return g.next(at) // every customer signed up: pick again
		}
	}
	if t == TypeCustomerSignedUp || len(g.active) == 0 {
		var c *customer
		if len(g.inactive) > 0 {
			i := g.rng.IntN(len(g.inactive))
			c = g.inactive[i]
			g.inactive = slices.Delete(g.inactive, i, i+1)
			g.active = append(g.active, c)
		} else {
			c = oneOf(g, g.active) // only sign-ups configured
		}
		return g.customerEvent(c, TypeCustomerSignedUp, at)
	}
	return g.customerEvent(oneOf(g, g.active), t, at)
}

func (g *gen) customerEvent(c *customer, t string, at time.Time) (*envelope.Envelope, error) {
	hasLeads := g.cfg.has(TypeLeadCreated)
	var open []*lead
	for _, l := range c.leads {
		if l.open() {
			open = append(open, l)
		}
	}
	if hasLeads && len(open) == 0 && (t == TypeLeadStatusChanged || t == TypeAppointmentBooked) {
		t = TypeLeadCreated // a lead must exist before it changes or gets an appointment
	}
	c.n++
	var data any
	switch t {
	case TypeCustomerSignedUp:
		data = CustomerSignedUp{CustomerID: c.id, Name: c.name, Email: c.email, Phone: c.phone, City: c.city}
	case TypeCustomerUpdated:
		data = CustomerUpdated{CustomerID: c.id, Changes: g.changes(c)}
	case TypeLeadCreated:
		l := &lead{id: g.cfg.LeadIDs.Min + g.nextLead%g.cfg.LeadIDs.Len(), car: g.inRange(g.cfg.CarIDs)}
		g.nextLead++
		c.leads = append(c.leads, l)
		data = LeadCreated{LeadID: l.id, CustomerID: c.id, CarID: l.car, Source: oneOf(g, LeadSources)}
	case TypeLeadStatusChanged:
		d := LeadStatusChanged{CustomerID: c.id}
		if hasLeads {
			l := oneOf(g, open)
			l.status = g.nextStatus(l.status)
			d.LeadID, d.Status = l.id, LeadStatuses[l.status]
		} else {
			d.LeadID, d.Status = g.inRange(g.cfg.LeadIDs), oneOf(g, LeadStatuses)
		}
		if g.rng.IntN(3) == 0 {
			d.Note = oneOf(g, notes)
		}
		data = d
	case TypeAppointmentBooked:
		g.nextAppt++
		d := AppointmentBooked{AppointmentID: g.nextAppt, CustomerID: c.id,
			ScheduledAt: g.slot(at).Format(time.RFC3339), Location: "Truebil Hub, " + c.city}
		if hasLeads {
			l := oneOf(g, open)
			d.LeadID, d.CarID = l.id, l.car
		} else {
			d.LeadID, d.CarID = g.inRange(g.cfg.LeadIDs), g.inRange(g.cfg.CarIDs)
		}
		data = d
	default:
		return nil, fmt.Errorf("loadgen: no generator for type %q", t)
	}
	return g.envelope(c.key, c.n, t, at, data)
}

// changes changes one to three of a customer's fields.
func (g *gen) changes(c *customer) CustomerChanges {
	var ch CustomerChanges
	for n := 1 + g.rng.IntN(3); n > 0; n-- {
		switch g.rng.IntN(4) {
		case 0:
			first, last, _ := strings.Cut(c.name, " ")
			if g.rng.IntN(2) == 0 {
				first = oneOf(g, firstNames)
			} else {
				last = oneOf(g, lastNames)
			}
			c.name = first + " " + last
			ch.Name = c.name
		case 1:
			c.email = fmt.Sprintf("%s%d.%d@example.com", strings.ToLower(strings.ReplaceAll(c.name, " ", ".")),
				c.id, c.n)
			ch.Email = c.email
		case 2:
			c.phone = g.phone()
			ch.Phone = c.phone
		case 3:
			c.city = oneOf(g, cities)
			ch.City = c.city
		}
	}
	return ch
}

// nextStatus moves a lead forward; sometimes a lead is lost early.
func (g *gen) nextStatus(cur int) int {
	switch {
	case g.rng.IntN(10) == 0:
		return 5 // lost
	case cur < 3:
		return cur + 1
	case g.rng.IntN(2) == 0:
		return 4 // won
	default:
		return 5
	}
}

// slot is an appointment time 1-7 days after at, 10:00-17:30 on the half hour.
func (g *gen) slot(at time.Time) time.Time {
	d := at.UTC().AddDate(0, 0, 1+g.rng.IntN(7))
	return time.Date(d.Year(), d.Month(), d.Day(), 10+g.rng.IntN(8), 30*g.rng.IntN(2), 0, 0, time.UTC)
}

func (g *gen) envelope(key string, n int, t string, at time.Time, data any) (*envelope.Envelope, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	return &envelope.Envelope{
		ID: key + "#" + strconv.Itoa(n), Type: t, Key: key, Source: oneOf(g, producers),
		OccurredAt: at, Data: b,
	}, nil
}
