module sluice.dev/ingest

go 1.26.0

require (
	sluice.dev/mesh v0.0.0
	sluice.dev/schemas v0.0.0
)

replace sluice.dev/mesh => ../mesh

replace sluice.dev/schemas => ../schemas
