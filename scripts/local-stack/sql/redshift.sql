-- Local stand-in for Redshift (PostgreSQL): patron info and the BIC pc_reserve table.
-- Placeholders, replace before running (plain text substitution):
--   {{PATRON_INFO_TABLE}}  patron_info_<REDSHIFT_DB_NAME>, or patron_info for production
--   {{PC_RESERVE_TABLE}}   pc_reserve_<REDSHIFT_DB_NAME>, or pc_reserve for production
-- Plain statements, each ending with a semicolon at the end of a line.
CREATE TABLE IF NOT EXISTS public.{{PATRON_INFO_TABLE}} (
  patron_id VARCHAR(64),
  postal_code VARCHAR(16),
  geoid VARCHAR(32)
);
CREATE TABLE IF NOT EXISTS public.{{PC_RESERVE_TABLE}} (
  key VARCHAR(64),
  transaction_et DATE,
  patron_id VARCHAR(64),
  patron_retrieval_status VARCHAR(32),
  branch VARCHAR(255)
);
