module sluice.dev/watchdog

go 1.26.0

require sluice.dev/mesh v0.0.0

replace sluice.dev/mesh => ../mesh
