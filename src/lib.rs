//! csmh-proxy: a MySQL-protocol proxy that moves Open edX's `courseware_studentmodulehistory` to its extended
//! table on the wire.
//!
//! The data path is `server` (accept, with `admission` limiting who gets in) → `session` (one client) →
//! `protocol` (frames and responses) → `backend` (the MySQL servers, their host names looked up through
//! `resolver`); `routing` decides what a statement naming the history table becomes, from the flags that `config`
//! reads and `history` defines and interprets. While the proxy runs, `reload` follows its configuration file and
//! puts each valid version in force in `state`; `topology` names where the two tables live.

pub mod admin;
pub mod admission;
pub mod auth_key;
pub mod backend;
pub mod config;
pub mod csmh_pool;
pub mod early_settings;
pub mod explain;
pub mod fleet;
pub mod grant_cache;
pub mod history;
pub mod merge;
pub mod metrics;
pub mod migrate;
pub mod preconnect;
pub mod protocol;
pub mod reload;
pub mod resolver;
pub mod routing;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod shadow;
pub mod state;
pub mod string_literal;
pub mod tls;
pub mod topology;
