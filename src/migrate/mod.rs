//! The operator's migration tooling (docs/migration.md): `init`, `migrate`, `verify`, `truncate-old` and `status`, the
//! steps that move every old history row into the extended table and then retire the old table.
//!
//! Each command reads the same `proxy.toml` as the proxy and logs in to the servers itself, with the `user` and
//! `password` (or `password_env`) of `[backends.edxapp]` and `[backends.csmh]`, and with TLS as their `[tls]`
//! says ([`tls`]). Progress lives in a checkpoint table beside the extended table ([`checkpoint`]), so a command
//! interrupted at any point can be run again.

pub mod checkpoint;
pub mod control;
pub mod copy;
mod error;
pub mod figures;
pub mod init;
pub mod observe;
pub mod schema;
mod site;
pub mod status;
pub mod tls;
pub mod truncate;
pub mod verify;

pub use error::MigrateError;
use error::{ER_BAD_DB, ER_NO_SUCH_TABLE};
pub use site::{Servers, Site};
