-- Anti-entropy resyncs (`resync_interval`, `pollbus resync`): when the last complete resync
-- started; when one was last requested (written only by the request, so a page commit never
-- overwrites a request made meanwhile); and the one under way: when it started and the vendor's
-- page token to read next (committed with each page, so a restart or a lease moving to another
-- replica goes on from there). Nanoseconds since the epoch, as every time here.
ALTER TABLE resources ADD COLUMN last_resync INTEGER;
ALTER TABLE resources ADD COLUMN resync_requested INTEGER;
ALTER TABLE resources ADD COLUMN resync_started INTEGER;
ALTER TABLE resources ADD COLUMN resync_token TEXT;
