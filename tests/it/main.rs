//! Integration tests against the real local stack (MariaDB, PostgreSQL, moto over TCP).
//! Run them with `scripts/test.sh`, which starts the stack and exports its addresses.

mod binary;
mod runs;
mod security;
mod support;
mod tls;
