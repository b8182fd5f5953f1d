// Package inbound will receive CRM webhooks, queue them durably, validate
// them and write them to the product database (see the inbound issue). It
// is an empty module today so the workspace layout is stable.
package inbound
