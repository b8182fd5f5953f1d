package loadgen

// Event types the generator produces. The sample catalog in schemas/ uses
// exactly these names and data fields.
const (
	TypeCustomerSignedUp  = "customer_signed_up"
	TypeCustomerUpdated   = "customer_updated"
	TypeCarListed         = "car_listed"
	TypeLeadCreated       = "lead_created"
	TypeLeadStatusChanged = "lead_status_changed"
	TypeAppointmentBooked = "appointment_booked"
)

// AllTypes lists every event type, in a fixed order.
var AllTypes = []string{
	TypeCustomerSignedUp, TypeCustomerUpdated, TypeCarListed,
	TypeLeadCreated, TypeLeadStatusChanged, TypeAppointmentBooked,
}

// defaultWeights is the default mix: relative frequency of each type.
// Sign-ups are also forced as the first event of every customer key.
var defaultWeights = map[string]int{
	TypeCustomerSignedUp:  5,
	TypeCustomerUpdated:   20,
	TypeCarListed:         15,
	TypeLeadCreated:       20,
	TypeLeadStatusChanged: 30,
	TypeAppointmentBooked: 10,
}

// LeadSources are the values of lead_created.source (the company's
// producers).
var LeadSources = []string{"website", "app", "pwa", "agent", "spreadsheet"}

// LeadStatuses are the values of lead_status_changed.status, in the order a
// lead moves through them; won and lost are final.
var LeadStatuses = []string{"new", "contacted", "test_drive_scheduled", "negotiating", "won", "lost"}

// CustomerSignedUp is the data of customer_signed_up.
type CustomerSignedUp struct {
	CustomerID int    `json:"customer_id"`
	Name       string `json:"name"`
	Email      string `json:"email"`
	Phone      string `json:"phone"`
	City       string `json:"city"`
}

// CustomerChanges are the changed fields of customer_updated; at least one
// is set.
type CustomerChanges struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	Phone string `json:"phone,omitempty"`
	City  string `json:"city,omitempty"`
}

// CustomerUpdated is the data of customer_updated.
type CustomerUpdated struct {
	CustomerID int             `json:"customer_id"`
	Changes    CustomerChanges `json:"changes"`
}

// CarListed is the data of car_listed.
type CarListed struct {
	CarID            int `json:"car_id"`
	SellerCustomerID int `json:"seller_customer_id"`
	Price            int `json:"price"`
}

// LeadCreated is the data of lead_created.
type LeadCreated struct {
	LeadID     int    `json:"lead_id"`
	CustomerID int    `json:"customer_id"`
	CarID      int    `json:"car_id"`
	Source     string `json:"source"`
}

// LeadStatusChanged is the data of lead_status_changed.
type LeadStatusChanged struct {
	LeadID     int    `json:"lead_id"`
	CustomerID int    `json:"customer_id"`
	Status     string `json:"status"`
	Note       string `json:"note,omitempty"`
}

// AppointmentBooked is the data of appointment_booked.
type AppointmentBooked struct {
	AppointmentID int    `json:"appointment_id"`
	LeadID        int    `json:"lead_id"`
	CustomerID    int    `json:"customer_id"`
	CarID         int    `json:"car_id"`
	ScheduledAt   string `json:"scheduled_at"`
	Location      string `json:"location"`
}

var (
	firstNames = []string{"Aarav", "Vivaan", "Aditya", "Ananya", "Diya", "Ishaan", "Kavya", "Meera",
		"Arjun", "Saanvi", "Rohan", "Priya", "Kabir", "Nisha", "Vikram", "Zara"}
	lastNames = []string{"Sharma", "Verma", "Iyer", "Reddy", "Nair", "Gupta", "Mehta", "Khan",
		"Patel", "Singh", "Das", "Joshi", "Rao", "Kapoor"}
	cities = []string{"Mumbai", "Delhi", "Bengaluru", "Pune", "Gurugram", "Hyderabad", "Chennai",
		"Noida", "Ahmedabad", "Kolkata"}
	notes = []string{"called back", "asked for a discount", "wants a weekend slot", "comparing two cars",
		"financing approved", "no answer", "visited the hub"}
	producers = []string{"website", "app", "pwa", "agent-desk", "spreadsheet", "cron"}
)
