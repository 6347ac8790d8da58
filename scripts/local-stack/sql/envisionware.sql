-- Envisionware (MariaDB/MySQL): the PC reservation table the poller reads.
-- Run inside the target database (lasttwodays locally, any name in tests).
-- Plain statements, each ending with a semicolon at the end of a line.
CREATE TABLE IF NOT EXISTS strad_bci (
  pcrKey BIGINT NOT NULL PRIMARY KEY,
  pcrUserID VARCHAR(255) NULL,
  pcrMinutesUsed INT NULL,
  pcrDateTime DATETIME NULL,
  pcrBranch VARCHAR(255) NULL,
  pcrArea VARCHAR(255) NULL,
  pcrUserData1 VARCHAR(255) NULL,
  KEY strad_bci_cursor (pcrDateTime, pcrKey)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
