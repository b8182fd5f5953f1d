package watchdog

import "sluice.dev/mesh/redact"

// redactStatus hides sensitive values in the free texts of a status answer:
// park reasons (they may quote a CRM's answer), alert texts, condition
// texts, lane notes and read errors. Stages, keys, consumers and counts are
// identifiers and stay readable. A nil r applies the built-in rules.
func redactStatus(st PageStatus, r *redact.Redactor) PageStatus {
	if r == nil {
		r = redact.Default
	}
	for i := range st.Parked {
		st.Parked[i].Reason = r.Text(st.Parked[i].Reason)
	}
	for i := range st.Alerts {
		st.Alerts[i].Text = r.Text(st.Alerts[i].Text)
	}
	for i := range st.Conditions {
		st.Conditions[i].Text = r.Text(st.Conditions[i].Text)
	}
	for i := range st.Lanes {
		st.Lanes[i].Note = r.Text(st.Lanes[i].Note)
	}
	for i := range st.Errors {
		st.Errors[i] = r.Text(st.Errors[i])
	}
	return st
}
