-- The publisher reads the outbox per topic (a paused topic never fills the batch window of
-- the others), and polling pauses per topic at outbox.max_rows.
CREATE INDEX IF NOT EXISTS outbox_topic ON outbox (topic, seq);
