//! Integration tests against the real local stack (MariaDB, PostgreSQL, moto over TCP).
//! Run them with `scripts/test.sh`, which starts the stack and exports its addresses.

mod bad_input;
mod binary;
mod guarantees;
mod process;
mod runs;
mod safety;
mod security;
mod stopping;
mod support;
mod tls;
mod tools;
