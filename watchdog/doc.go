// Package watchdog keeps Sluice's lanes moving without an operator: it
// polls the ConsumerInfo of every lane, the parked stream and the micro
// services, captures JetStream advisories in a stream, resumes lanes whose
// pause outlived its deadline, asks the owning service to restart a stalled
// lane over <prefix>.control.<service> (see ServeControl), recreates
// deleted streams and consumers, restarts crashed services in --target all
// mode (Supervisor) and sends deduplicated alerts with a "recovered"
// message to Slack and a generic webhook. See README.md.
package watchdog
