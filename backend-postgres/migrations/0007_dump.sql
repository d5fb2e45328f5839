-- stowage PostgreSQL schema, version 7: dumps (SEMANTICS §4.5).
--
-- An export reads records in canonical order, (name, stored_at, id) ascending, a page at a time
-- after the last row of the previous page. records_by_name runs (name, stored_at DESC, id DESC),
-- which no scan direction turns into that order (name ascending with stored_at ascending), so
-- the export has its own index: every page is one index range scan of at most 1000 entries.
-- Every other section pages on a primary key (policies, windows, counters, reservations, dedup).
CREATE INDEX records_in_order ON __SCHEMA__.records (name, stored_at, id);

-- Dedup records carry stowage_core::dedup_fingerprint, the 22-digit digest of the report (what a
-- dump carries). Builds before this version stored the text it is the digest of
-- (dedup_fingerprint_text: 'v1' and the dimensions, never 22 URL-safe base64 digits): those
-- records get its digest — the first 128 bits of SHA-256 of the text, in URL-safe base64 without
-- padding, as stowage_core computes it — so a keyed report repeated after the upgrade replays
-- instead of conflicting, and the record exports.
UPDATE __SCHEMA__.dedup
   SET fingerprint = translate(
           left(encode(substring(sha256(convert_to(fingerprint, 'UTF8')) FROM 1 FOR 16), 'base64'), 22),
           '+/', '-_')
 WHERE fingerprint !~ '^[A-Za-z0-9_-]{22}$';
