-- Each stored part PUT writes its own immutable object; the row names the one that counts, so
-- the recorded ETag always describes exactly the bytes it points at. NULL: the legacy fixed key.
ALTER TABLE upload_parts ADD COLUMN object TEXT;
