//! Session settings answered early ([`crate::early_settings`]): while a session has sent nothing since its login
//! but the statements that set it up, a statement whose answer the proxy learned from the server, in the same
//! state, is answered by the proxy and sent on in front of the session's next command; one whose answer it does
//! not know yet is relayed, and its answer learned.

use bytes::{Bytes, BytesMut};
use tracing::warn;

use super::error::SessionError;
use super::request::Request;
use super::{Decision, Flow, Session};
use crate::backend;
use crate::early_settings::{self, Question};
use crate::metrics::RouteLabel;
use crate::protocol::command::{self, Command};
use crate::protocol::frame::{self, PacketSpan};
use crate::protocol::packets::{self, is_ok_packet};
use crate::protocol::reply::Reply;
use crate::protocol::response::Expect;

/// Whether a session may still have its setup statements answered early.
pub(super) enum Early {
    /// It has sent nothing since its login, as `user`. Its first setup statement is relayed: the login's OK
    /// does not show the session's state, since the server runs `init_connect` after sending it (which may set
    /// `sql_mode`'s `NO_BACKSLASH_ESCAPES`, that client libraries escape strings by, or turn autocommit off), and
    /// the first statement's answer does.
    Opening {
        /// The account it logged in as: learned answers are the answers to one account's statements.
        user: Vec<u8>,
    },
    /// It has sent nothing but setup statements, the first of them relayed, so that its status flags are the
    /// server's own.
    Open {
        /// The account it logged in as.
        user: Vec<u8>,
    },
    /// It sent something else, or answering early is off.
    Closed,
}

/// What happens to a setup statement of a session whose setup statements may be answered early.
pub(super) enum Setup {
    /// The proxy answers it with the server's learned answer, and sends it on with the next command.
    Answer(Bytes),
    /// It is relayed, and the server's answer learned as the answer to this question.
    Learn(Question),
    /// It is relayed and its answer not learned: the session's first setting, whose state before it is not
    /// known.
    Relay,
}

impl Session {
    /// The decision for `request` if the session's setup statements may still be answered early and it is one;
    /// any other request closes them for the rest of the session.
    pub(super) fn decide_setup(&mut self, request: &mut Request) -> Option<Decision> {
        if matches!(self.early, Early::Closed) {
            return None;
        }
        let statement = match request.command {
            // A packet out of sequence is the server's to refuse (1156), as it would directly.
            Command::Query if request.span.is_single_frame() && request.span.last_seq == 0 => {
                command::body(request.span.first_frame(&self.client.buf))
            }
            Command::Quit => return None,
            _ => &[][..],
        };
        let room = self.edxapp.conn.commands_ahead() < early_settings::MAX_AHEAD;
        if !room || !early_settings::answerable(statement) || self.in_open_transaction() {
            self.early = Early::Closed;
            return None;
        }
        // Counted as what it is: a statement relayed untouched, if later.
        request.label = Some(RouteLabel::PassthroughMiss);
        let user = match &mut self.early {
            Early::Opening { user } => {
                let user = std::mem::take(user);
                self.early = Early::Open { user };
                return Some(Decision::Setup(Setup::Relay));
            }
            Early::Open { user } => user.as_slice(),
            Early::Closed => return None,
        };
        let caps = self.edxapp.caps.flags().bits();
        let question = Question::new(&self.edxapp.address, user, caps, self.edxapp.status.bits(), statement);
        Some(Decision::Setup(match self.shared.early_answers.answer(&question) {
            Some(answer) => Setup::Answer(answer),
            None => Setup::Learn(question),
        }))
    }

    /// Carries out a [`Setup`] decision.
    pub(super) async fn set_up(&mut self, request: &mut Request, setup: Setup) -> Result<Flow, SessionError> {
        match setup {
            Setup::Answer(answer) => self.answer_early(request, answer).await,
            Setup::Learn(question) => self.learn_answer(request, Some(question)).await,
            Setup::Relay => self.learn_answer(request, None).await,
        }
    }

    /// Answers the request with the server's learned `answer`, and has `edxapp` send the request in front of
    /// the session's next command, where its own answer is checked against this one.
    async fn answer_early(&mut self, request: &mut Request, answer: Bytes) -> Result<Flow, SessionError> {
        let packet = &self.client.buf[..request.span.wire_len];
        self.edxapp.conn.send_ahead(packet, answer.clone());
        self.edxapp.note_status(packets::ok_status(&answer).unwrap_or_default());
        self.edxapp.note_error(None);
        self.shared.metrics.setting_answered_early();
        let mut out = BytesMut::with_capacity(answer.len() + 4);
        frame::write_packet(&mut out, request.first_answer_seq(), &answer);
        self.answer(request, &out).await
    }

    /// Relays the request and the server's answer, and learns that answer as the answer to `question`, if there
    /// is one and the answer is an OK.
    async fn learn_answer(&mut self, request: &mut Request, question: Option<Question>) -> Result<Flow, SessionError> {
        self.relay_request(request).await?;
        let response = backend::read_response(&mut self.edxapp.conn, self.edxapp.caps, Expect::ResultSets).await?;
        match Reply::parse(&response, self.edxapp.caps).map_err(SessionError::BackendProtocol)? {
            Reply::Ok(ok) => {
                self.edxapp.note_status(ok.status);
                self.edxapp.note_error(None);
                if let (Some(question), Some(answer)) = (question, single_ok_payload(&response)) {
                    self.shared.early_answers.learn(question, answer);
                }
            }
            Reply::Err(error) => self.edxapp.note_error(Some(error.code)),
            Reply::Rows(_) | Reply::Prepared(_) => self.edxapp.note_error(None),
        }
        self.write_to_client(request, &response).await?;
        Ok(Flow::Continue)
    }

    /// After a request: if `edxapp` answered a statement sent ahead otherwise than the learned answer the client
    /// got, the answers learned from that server are forgotten, to be learned again.
    pub(super) fn check_answers_sent_ahead(&mut self) {
        if self.edxapp.conn.take_diverged() {
            warn!(
                server = %self.edxapp.address,
                "the server answered a session setting otherwise than before; its answers are learned again"
            );
            self.shared.metrics.setting_answer_diverged();
            self.shared.early_answers.forget(&self.edxapp.address);
        }
    }
}

/// The payload of `response` if it is one OK packet in one frame.
fn single_ok_payload(response: &[u8]) -> Option<Bytes> {
    let span = PacketSpan::find(response)?;
    let payload = span.first_frame(response);
    (span.wire_len == response.len() && span.is_single_frame() && is_ok_packet(payload))
        .then(|| Bytes::copy_from_slice(payload))
}
