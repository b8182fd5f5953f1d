// Command sluice is the single binary: every Sluice service, the CRM
// simulator and the operator commands. See `sluice --help`.
package main

import (
	"os"

	"sluice.dev/cmd/sluice/internal/app"
)

func main() { os.Exit(app.Main(os.Args[1:])) }
