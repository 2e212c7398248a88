//! A read of both tables on one server as one `UNION ALL` statement, sent in place of the client's on its own
//! connection: a prepared read of both tables on one server, and a read the merge cannot answer.

use super::error::SessionError;
use super::request::Request;
use super::{Flow, Session};

impl Session {
    /// Sends the union statement `sql` in place of the client's and relays the answer.
    pub(super) async fn union_read(&mut self, request: &mut Request, sql: &[u8]) -> Result<Flow, SessionError> {
        self.relay_instead(request, sql).await
    }
}
