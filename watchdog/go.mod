module sluice.dev/watchdog

go 1.26.0
