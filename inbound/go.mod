module sluice.dev/inbound

go 1.26.0
