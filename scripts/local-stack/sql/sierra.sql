-- Sierra (PostgreSQL): the two sierra_view tables the poller reads.
-- Run inside the target database (iii locally, any name in tests).
-- Plain statements, each ending with a semicolon at the end of a line.
CREATE SCHEMA IF NOT EXISTS sierra_view;
CREATE TABLE IF NOT EXISTS sierra_view.phrase_entry (
  id BIGSERIAL PRIMARY KEY,
  record_id BIGINT,
  index_tag VARCHAR(1),
  index_entry VARCHAR(512)
);
CREATE INDEX IF NOT EXISTS phrase_entry_tag_entry_idx ON sierra_view.phrase_entry ((index_tag || index_entry));
CREATE TABLE IF NOT EXISTS sierra_view.patron_view (
  id BIGINT,
  record_num INT,
  barcode VARCHAR(512),
  ptype_code INT,
  pcode3 INT,
  home_library_code VARCHAR(5)
);
CREATE INDEX IF NOT EXISTS patron_view_id_idx ON sierra_view.patron_view (id);
