//! Replication lag: how far the `csmh` server, when it is a replica, is behind its source. `migrate` pauses while
//! it is above `--max-replication-lag`, so the copy does not leave the replicas that serve reads behind.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::warn;

/// What a server says of its replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lag {
    /// It replicates from no one (or will not say): nothing to wait for, ever.
    NotAReplica,
    /// It is a replica whose lag is unknown (replication stopped): copying goes on.
    Unknown,
    /// The replica's lag in seconds (the largest of its channels).
    Seconds(u64),
}

/// Asks `SHOW REPLICA STATUS`, or `SHOW SLAVE STATUS` on servers too old for it.
pub async fn replication_lag(conn: &mut Conn) -> Lag {
    for statement in ["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"] {
        match conn.query::<mysql_async::Row, _>(statement).await {
            Ok(rows) => return lag_of(&rows),
            Err(mysql_async::Error::Server(error)) if error.code == ER_PARSE_ERROR => continue,
            Err(error) => {
                warn!(
                    %error,
                    "cannot read the replication status, so replication lag is not watched (the account needs \
                     REPLICATION CLIENT, or SLAVE MONITOR on MariaDB)"
                );
                return Lag::NotAReplica;
            }
        }
    }
    Lag::NotAReplica
}

/// MySQL's syntax error, the answer of servers that know only `SHOW SLAVE STATUS`.
const ER_PARSE_ERROR: u16 = 1064;

fn lag_of(rows: &[mysql_async::Row]) -> Lag {
    if rows.is_empty() {
        return Lag::NotAReplica;
    }
    let mut lag = Lag::Unknown;
    for row in rows {
        let seconds = ["Seconds_Behind_Master", "Seconds_Behind_Source"]
            .iter()
            .find_map(|column| row.get_opt::<Option<u64>, _>(*column).and_then(Result::ok).flatten());
        if let Some(seconds) = seconds {
            lag = match lag {
                Lag::Seconds(worst) => Lag::Seconds(worst.max(seconds)),
                _ => Lag::Seconds(seconds),
            };
        }
    }
    lag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_row(column: &str, value: mysql_async::Value) -> mysql_async::Row {
        use mysql_async::consts::ColumnType;
        let columns = [mysql_async::Column::new(ColumnType::MYSQL_TYPE_LONGLONG).with_name(column.as_bytes())];
        mysql_common::row::new_row(vec![value], columns.into())
    }

    #[test]
    fn the_lag_is_the_worst_channels_and_a_server_without_channels_is_no_replica() {
        assert_eq!(lag_of(&[]), Lag::NotAReplica);
        let mariadb = status_row("Seconds_Behind_Master", mysql_async::Value::Int(3));
        let mysql = status_row("Seconds_Behind_Source", mysql_async::Value::Bytes(b"12".to_vec()));
        assert_eq!(lag_of(&[mariadb, mysql]), Lag::Seconds(12));
        assert_eq!(lag_of(&[status_row("Seconds_Behind_Master", mysql_async::Value::NULL)]), Lag::Unknown);
    }
}
