-- Tables the sample inbound catalog writes to besides the marketplace's
-- leads and appointments (schemas/marketplace/seed.sql). SQLite; safe to
-- run twice.
CREATE TABLE IF NOT EXISTS lead_notes (
  id         TEXT PRIMARY KEY,
  lead_id    INTEGER NOT NULL REFERENCES leads(id),
  author     TEXT NOT NULL,
  body       TEXT NOT NULL,
  created_at TEXT NOT NULL
);
