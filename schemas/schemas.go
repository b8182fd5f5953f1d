// Package schemas embeds the sample used-car marketplace that `make run`
// and the demos use: one JSON Schema per event type, the catalog config
// mapping the types to CRM requests, and the SQLite data mart the enricher's
// lookups read. It has no dependencies: the files are plain data.
package schemas

import (
	"embed"
	"io/fs"
)

//go:embed marketplace/*.json marketplace/catalog.yaml marketplace/seed.sql
var files embed.FS

// Marketplace returns the sample's files rooted at the marketplace folder:
// the <type>.json schemas (customer_signed_up.json, car_listed.json, ...)
// are at the top, next to catalog.yaml and seed.sql. Pass it to
// catalog.Compile as the schema file system.
func Marketplace() fs.FS {
	sub, err := fs.Sub(files, "marketplace")
	if err != nil { // cannot happen: the folder is embedded above
		panic(err)
	}
	return sub
}

// MarketplaceCatalog returns catalog.yaml: a catalog.Config (the "types:"
// map, schemas_dir omitted so the embedded schemas are used).
func MarketplaceCatalog() []byte { return mustRead("marketplace/catalog.yaml") }

// MarketplaceSeed returns seed.sql: SQLite DDL and rows for the customers,
// cars, leads and appointments tables. It uses CREATE TABLE IF NOT EXISTS
// and INSERT OR IGNORE, so running it twice is harmless.
func MarketplaceSeed() string { return string(mustRead("marketplace/seed.sql")) }

// Types lists the sample's event types in the order a customer's story
// usually unfolds.
func Types() []string {
	return []string{"customer_signed_up", "customer_updated", "car_listed", "lead_created",
		"lead_status_changed", "appointment_booked"}
}

func mustRead(name string) []byte {
	b, err := files.ReadFile(name)
	if err != nil { // cannot happen: the file is embedded above
		panic(err)
	}
	return b
}
