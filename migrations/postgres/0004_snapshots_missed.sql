-- Consecutive reconciliations whose id listing did not show the record. Listings paged by
-- offset can skip a record when others are deleted mid-listing, so their sources delete only
-- records missed twice in a row; a listing or a poll that sees the record resets it.
ALTER TABLE snapshots ADD COLUMN missed INTEGER NOT NULL DEFAULT 0;
