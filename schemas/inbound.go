package schemas

import (
	"embed"
	"io/fs"
)

//go:embed inbound/*.json inbound/catalog.yaml inbound/setup.sql
var inboundFiles embed.FS

// Inbound returns the sample CRM's inbound webhook files rooted at the
// inbound folder: the <type>.json schemas (lead_status_changed.json,
// appointment_booked.json, note_added.json, lead_record.json) next to catalog.yaml and
// setup.sql. The inbound writer compiles the schemas from it when its
// config names no schemas_dir.
func Inbound() fs.FS {
	sub, err := fs.Sub(inboundFiles, "inbound")
	if err != nil { // cannot happen: the folder is embedded above
		panic(err)
	}
	return sub
}

// InboundCatalog returns inbound/catalog.yaml: the "types:" map of the
// sample CRM's webhooks (an inbound.Catalog), writing to the marketplace's
// leads and appointments tables and to lead_notes.
func InboundCatalog() []byte { return mustReadInbound("inbound/catalog.yaml") }

// InboundSetup returns inbound/setup.sql: SQLite DDL for the tables the
// sample inbound catalog writes besides the marketplace's (lead_notes). Run
// it after MarketplaceSeed; running it twice is harmless.
func InboundSetup() string { return string(mustReadInbound("inbound/setup.sql")) }

// InboundTypes lists the sample CRM's webhook types.
func InboundTypes() []string {
	return []string{"lead_status_changed", "appointment_booked", "note_added", "lead_record"}
}

func mustReadInbound(name string) []byte {
	b, err := inboundFiles.ReadFile(name)
	if err != nil { // cannot happen: the file is embedded above
		panic(err)
	}
	return b
}
