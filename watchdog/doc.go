// Package watchdog will watch JetStream advisories and lane progress,
// resume and restart stalled lanes and alert on Slack (see the watchdog
// issue). It is an empty module today so the workspace layout is stable.
package watchdog
