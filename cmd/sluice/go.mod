module sluice.dev/cmd/sluice

go 1.26.0

require (
	sluice.dev/dispatcher v0.0.0
	sluice.dev/e2e v0.0.0
	sluice.dev/enricher v0.0.0
	sluice.dev/inbound v0.0.0
	sluice.dev/ingest v0.0.0
	sluice.dev/mesh v0.0.0
	sluice.dev/schemas v0.0.0
	sluice.dev/watchdog v0.0.0
)

replace sluice.dev/mesh => ../../mesh

replace sluice.dev/schemas => ../../schemas

replace sluice.dev/ingest => ../../ingest

replace sluice.dev/enricher => ../../enricher

replace sluice.dev/dispatcher => ../../dispatcher

replace sluice.dev/inbound => ../../inbound

replace sluice.dev/watchdog => ../../watchdog

replace sluice.dev/e2e => ../../e2e
