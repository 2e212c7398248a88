//! The shadow worker: one task per proxy, with a connection of its own to the `csmh` server, that answers each
//! sampled read from the extended table alone and compares the answer with the one the client got.
//!
//! The connection logs in as `[backends.csmh]` (with its TLS), uses `utf8mb4` as edxapp does, and is opened again
//! when the configuration changes or a statement fails. A failure is counted and logged and never reaches a
//! client.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::compare::{self, Row};
use super::{MAX_CAPTURED_BYTES, Sample};
use crate::backend::{self, Credentials, LoginTls};
use crate::metrics::ShadowCounters;
use crate::protocol::capabilities::Negotiated;
use crate::protocol::conn::Connection;
use crate::protocol::reply::{Reply, text_row};
use crate::resolver::Resolver;
use crate::state::ConfigSnapshot;

/// The largest answer from the extended table the worker reads into memory: twice the client's largest kept
/// answer, so extra rows still show as a difference.
const MAX_SHADOW_BYTES: usize = 2 * MAX_CAPTURED_BYTES;

/// The worker's connection, and the configuration generation it was opened under.
struct Link {
    generation: u64,
    conn: Connection,
    caps: Negotiated,
}

/// What became of one sample.
enum Outcome {
    /// The extended table alone gave the client's answer.
    Matching,
    /// It did not.
    Differing(compare::Difference),
    /// Why it could not be compared.
    Failed(String),
}

/// Compares samples until the proxy (the queue's sender) goes away.
pub async fn run(mut samples: mpsc::Receiver<Sample>, counters: ShadowCounters, resolver: Arc<Resolver>) {
    let mut link: Option<Link> = None;
    while let Some(sample) = samples.recv().await {
        match compare_sample(&mut link, &sample, &resolver).await {
            Outcome::Matching => {
                counters.matching.inc();
                debug!(rows = sample.rows.len(), "shadow read: the extended table alone gave the same answer");
            }
            Outcome::Differing(difference) if difference.loses_rows() => {
                counters.differed();
                warn!(
                    %difference,
                    "shadow read: the extended table alone would not give the answer the client got (rows not \
                     copied, or changed since their copy): run `csmh-proxy verify`"
                );
            }
            Outcome::Differing(difference) => {
                counters.inconclusive.inc();
                info!(%difference, "shadow read: only newer rows or another order, likely a write between the two reads");
            }
            Outcome::Failed(why) => {
                counters.failed.inc();
                link = None;
                warn!(error = %why, "shadow read failed; the client's read was not affected");
            }
        }
    }
}

/// Runs the sample's statement on the extended table and compares.
async fn compare_sample(link: &mut Option<Link>, sample: &Sample, resolver: &Resolver) -> Outcome {
    let answered: Result<Vec<Row>, _> = sample.rows.iter().map(|row| text_row(row)).collect();
    let Ok(answered) = answered else { return Outcome::Failed("the client's answer did not parse".to_owned()) };
    let snapshot = &sample.snapshot;
    if link.as_ref().is_none_or(|open| open.generation != snapshot.generation) {
        match open(snapshot, resolver).await {
            Ok(opened) => *link = Some(opened),
            Err(why) => return Outcome::Failed(why),
        }
    }
    let Some(open) = link.as_mut() else { return Outcome::Failed("no connection".to_owned()) };
    let reply = backend::query_within(&mut open.conn, open.caps, &sample.statement, MAX_SHADOW_BYTES).await;
    let rows = match reply {
        Ok(Reply::Rows(rows)) => rows.values,
        Ok(Reply::Err(error)) => return Outcome::Failed(format!("the extended table refused the read: {error}")),
        Ok(_) => return Outcome::Failed("the read returned no rows result".to_owned()),
        Err(error) => return Outcome::Failed(error.to_string()),
    };
    if rows.first().is_some_and(|row| row.len() != sample.columns) {
        return Outcome::Failed("the extended table's answer has other columns".to_owned());
    }
    match compare::compare(&answered, &rows, sample.id_column) {
        None => Outcome::Matching,
        Some(difference) => Outcome::Differing(difference),
    }
}

/// Opens and logs in the worker's connection as `[backends.csmh]`.
async fn open(snapshot: &ConfigSnapshot, resolver: &Resolver) -> Result<Link, String> {
    let backend = &snapshot.config.backends.csmh;
    let user = backend.user.clone().ok_or("[backends.csmh] has no user")?;
    let password = backend.password().map_err(|error| error.to_string())?;
    let database = Some(snapshot.router.extended().schema().to_owned());
    let credentials = Credentials { user, password, database };
    let mut conn =
        backend::connect(resolver, &backend.address, backend.connect_timeout_secs).await.map_err(|e| e.to_string())?;
    conn.set_io_timeout(Duration::from_secs(backend.read_timeout_secs));
    let tls = LoginTls { settings: &snapshot.tls.csmh, client_tls: snapshot.config.listen.tls.is_some() };
    let login =
        backend::login_over(&mut conn, &credentials, backend::LOGIN_CAPABILITIES, Default::default(), Some(tls));
    let caps = tokio::time::timeout(Duration::from_secs(backend.connect_timeout_secs), login)
        .await
        .map_err(|_| "no login answer in time".to_owned())?
        .map_err(|error| error.to_string())?;
    match backend::query(&mut conn, caps, b"SET NAMES utf8mb4").await {
        Ok(Reply::Ok(_)) => {}
        Ok(_) => return Err("SET NAMES utf8mb4 was refused".to_owned()),
        Err(error) => return Err(error.to_string()),
    }
    info!(address = %backend.address, "opened the shadow reads' connection");
    Ok(Link { generation: snapshot.generation, conn, caps })
}
