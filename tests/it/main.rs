//! Integration tests against the real local stack (MariaDB, PostgreSQL, moto over TCP).
//! Run them with `scripts/test.sh`, which starts the stack and exports its addresses.
//! Each module tests one subject; `support` and `process` are the shared helpers.

// Bad input end to end: one clear line each, nothing lost.
mod bad_input;
// The binary as operators run it: KMS-encrypted YAML, exit codes, the one-line error.
mod binary;
// Bounded inputs, each fed one byte over its bound (cursor, lease, schema, command-line secrets).
mod bounds;
// Claims that had no test that could fail: Kinesis 5xx, retry counts, lease races, SQL in values.
mod claims;
// Long closures: the caught-up mark tells an old cursor from rows purged before being read.
mod closure;
// Sierra and Redshift as they really are: column types, prepared statements, `check`'s queries.
mod databases;
// The one line that ends a command which did not succeed, in text and JSON, for each command.
mod failure_line;
// Rows that appear behind the cursor: counted by the next run, delivered by `backfill --only-missing`.
mod late_rows;
// Every command under exactly the shipped IAM policies, on an IAM-enforcing moto.
mod least_privilege;
// Precedence through the binary: `--set` over the environment over the file.
mod precedence;
// Helpers: bounded waits on the real binary (a child that outlives its limit is killed).
mod process;
// `RETRY_ATTEMPTS` and the schema and database timeouts against failing, silent, slow dependencies.
mod retries;
// Whole runs through the library: behaviour §4's rules, batching, resuming, tie groups, kernels.
mod runs;
// S3 as it really answers (403 without `s3:ListBucket`, lost answers to committed writes).
mod s3_real_answers;
// Crash safety: the lease, another writer moving the cursor, retention watchdog, settle delay.
mod safety;
// Nothing leaks, nothing injects: no identifier or secret in any output, every SQL value bound.
mod security;
// The binary stopped: SIGTERM/SIGINT, a request outlasting the stop timeout, `backfill`, `run --every`.
mod stopping;
// Helpers: each test's own databases, bucket and stream on the local stack.
mod support;
// TLS to every database: each `sslmode`, host names and CAs, cleartext password requests.
mod tls;
// The operator tools through the binary: `check`, `--dry-run`, `cursor`, `decode`, `backfill`, `reconcile`.
mod tools;
