#!/bin/sh
# Loads Sluice's sample used-car marketplace into the compose PostgreSQL:
# the product tables the enricher's lookups read and the inbound webhooks
# write (customers, cars, leads, appointments) and the inbound sample's
# lead_notes. The official postgres image runs this once, on an empty data
# volume (/docker-entrypoint-initdb.d), as POSTGRES_USER in POSTGRES_DB.
#
# The scripts are written for SQLite (schemas/marketplace/seed.sql,
# schemas/inbound/setup.sql, mounted read-only under $SLUICE_SQL_DIR); two
# SQLite-only forms are rewritten on the way: the PRAGMA line is dropped and
# INSERT OR IGNORE becomes INSERT (the database is empty). The rest is
# portable SQL. cmd/sluice/internal/app/compose_test.go runs this script
# against a real PostgreSQL when SLUICE_TEST_POSTGRES_DSN is set.
set -e
dir=${SLUICE_SQL_DIR:-/sluice/sql}
for f in "$dir/marketplace-seed.sql" "$dir/inbound-setup.sql"; do
	[ -r "$f" ] || { echo "10-sluice-sample.sh: $f is missing" >&2; exit 1; }
done
{
	echo 'BEGIN;'
	sed -e '/^PRAGMA /d' -e 's/^INSERT OR IGNORE INTO /INSERT INTO /' \
		"$dir/marketplace-seed.sql" "$dir/inbound-setup.sql"
	echo 'COMMIT;'
} | psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB"
echo "10-sluice-sample.sh: sample marketplace loaded into $POSTGRES_DB"
