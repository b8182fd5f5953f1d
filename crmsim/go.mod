module sluice.dev/crmsim

go 1.26.0

require (
	github.com/rs/zerolog v1.35.1
	github.com/stretchr/testify v1.12.1
	sluice.dev/mesh v0.0.0
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.24 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace sluice.dev/mesh => ../mesh

replace sluice.dev/schemas => ../schemas
