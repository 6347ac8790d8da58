//! Integration tests against the real local stack (MariaDB, PostgreSQL, moto over TCP).
//! Run them with `scripts/test.sh`, which starts the stack and exports its addresses.

mod bad_input;
mod binary;
mod bounds;
mod claims;
mod closure;
mod databases;
mod failure_line;
mod guarantees;
mod late_rows;
mod least_privilege;
mod precedence;
mod process;
mod runs;
mod s3_real_answers;
mod safety;
mod security;
mod stopping;
mod support;
mod tls;
mod tools;
