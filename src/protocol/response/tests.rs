use bytes::BytesMut;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};

use super::*;
use crate::protocol::frame::{MAX_PAYLOAD, write_packet};

const MORE: u16 = 0x0008;
const AUTOCOMMIT: u16 = 0x0002;
const CURSOR: u16 = 0x0040;

/// The capabilities of a session with or without CLIENT_DEPRECATE_EOF.
fn caps(deprecate_eof: bool) -> Negotiated {
    let protocol_41 = CapabilityFlags::CLIENT_PROTOCOL_41.bits();
    let eof = if deprecate_eof { CapabilityFlags::CLIENT_DEPRECATE_EOF.bits() } else { 0 };
    Negotiated::new(protocol_41 | eof, protocol_41 | eof)
}

/// Frames a sequence of payloads as consecutive packets.
fn wire(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut seq = 1;
    for p in packets {
        seq = write_packet(&mut out, seq, p);
    }
    out.to_vec()
}

fn ok(status: u16) -> Vec<u8> {
    let mut p = vec![0x00, 0x00, 0x00];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p
}

fn eof(status: u16) -> Vec<u8> {
    let mut p = vec![0xFE, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p
}

fn ok_end(status: u16) -> Vec<u8> {
    let mut p = ok(status);
    p[0] = 0xFE;
    p
}

fn err() -> Vec<u8> {
    b"\xff\x28\x04#42000You have an error".to_vec()
}

fn column_def() -> Vec<u8> {
    b"\x03def\x06edxapp\x01t\x01t\x02id\x02id\x0c\x3f\x00\x0b\x00\x00\x00\x03\x03\x42\x00\x00\x00".to_vec()
}

fn row(text: &str) -> Vec<u8> {
    let mut p = vec![text.len() as u8];
    p.extend_from_slice(text.as_bytes());
    p
}

/// A text result set with `columns` columns and `rows` rows, ended per `deprecate_eof`.
fn result_set(columns: u8, rows: usize, deprecate_eof: bool, status: u16) -> Vec<Vec<u8>> {
    let mut out = vec![vec![columns]];
    out.extend((0..columns).map(|_| column_def()));
    if !deprecate_eof {
        out.push(eof(status & !MORE));
    }
    out.extend((0..rows).map(|i| row(&i.to_string())));
    out.push(if deprecate_eof { ok_end(status) } else { eof(status) });
    out
}

/// Feeds `bytes` to a scanner in chunks of `chunk` bytes, as reads from a socket would deliver them, and returns
/// every progress other than `NeedMore` with the offset up to which bytes had been released when it was reported.
fn feed(scanner: &mut ResponseScanner, bytes: &[u8], chunk: usize) -> Vec<(usize, Progress)> {
    let mut events = Vec::new();
    let mut released = 0;
    let mut available = 0;
    while released < bytes.len() {
        if available < bytes.len() {
            available = (available + chunk).min(bytes.len());
        }
        let (n, progress) = scanner.scan(&bytes[released..available]).expect("well-formed response");
        released += n;
        match progress {
            Progress::NeedMore => assert!(available < bytes.len() || n > 0, "stalled at {released}"),
            other => events.push((released, other)),
        }
    }
    events
}

fn assert_single_end(expect: Expect, deprecate_eof: bool, packets: &[Vec<u8>], end: End) {
    let bytes = wire(packets);
    for chunk in [1, 2, 3, 5, 7, 64, bytes.len()] {
        let mut scanner = ResponseScanner::new(expect, caps(deprecate_eof));
        let events = feed(&mut scanner, &bytes, chunk);
        assert_eq!(events, vec![(bytes.len(), Progress::Done(end))], "chunk size {chunk}");
    }
}

#[test]
fn ok_and_err_end_a_statement() {
    assert_single_end(Expect::ResultSets, false, &[ok(AUTOCOMMIT)], End::Ok);
    assert_single_end(Expect::ResultSets, true, &[err()], End::Err);
}

#[test]
fn result_set_ends_at_its_final_eof_or_ok() {
    for deprecate_eof in [false, true] {
        assert_single_end(Expect::ResultSets, deprecate_eof, &result_set(2, 3, deprecate_eof, AUTOCOMMIT), End::Ok);
        assert_single_end(Expect::ResultSets, deprecate_eof, &result_set(1, 0, deprecate_eof, AUTOCOMMIT), End::Ok);
    }
}

#[test]
fn status_of_the_final_packet_is_kept() {
    let bytes = wire(&result_set(1, 1, true, AUTOCOMMIT | 0x0001));
    let mut scanner = ResponseScanner::new(Expect::ResultSets, caps(true));
    feed(&mut scanner, &bytes, bytes.len());
    assert_eq!(scanner.status().map(|s| s.bits()), Some(AUTOCOMMIT | 0x0001));
}

#[test]
fn the_error_code_that_ended_a_response_is_kept() {
    let bytes = wire(&[err()]);
    let mut scanner = ResponseScanner::new(Expect::ResultSets, caps(false));
    feed(&mut scanner, &bytes, bytes.len());
    assert_eq!(scanner.error_code(), Some(1064));
}

#[test]
fn the_statement_a_prepare_gave_is_kept() {
    let prepared = wire(&[vec![0x00, 7, 0, 0, 0x80, 0, 0, 2, 0, 0, 0, 0], column_def(), column_def()]);
    let mut scanner = ResponseScanner::new(Expect::Prepare, caps(true));
    feed(&mut scanner, &prepared, prepared.len());
    let expected = PrepareOk { statement_id: 0x8000_0007, columns: 0, params: 2 };
    assert_eq!(scanner.prepared_statement(), Some(expected));
    let refused = wire(&[err()]);
    let mut scanner = ResponseScanner::new(Expect::Prepare, caps(true));
    feed(&mut scanner, &refused, refused.len());
    assert_eq!(scanner.prepared_statement(), None);
}

#[test]
fn error_in_the_middle_of_rows_ends_the_response() {
    let mut packets = result_set(1, 2, false, AUTOCOMMIT);
    packets.pop();
    packets.push(err());
    assert_single_end(Expect::ResultSets, false, &packets, End::Err);
}

#[test]
fn multiple_results_continue_until_the_last() {
    for deprecate_eof in [false, true] {
        let mut packets = result_set(1, 2, deprecate_eof, AUTOCOMMIT | MORE);
        packets.push(ok(AUTOCOMMIT | MORE));
        packets.extend(result_set(3, 1, deprecate_eof, AUTOCOMMIT));
        assert_single_end(Expect::ResultSets, deprecate_eof, &packets, End::Ok);
    }
}

#[test]
fn error_after_a_first_result_ends_the_response() {
    let packets = vec![ok(AUTOCOMMIT | MORE), err()];
    assert_single_end(Expect::ResultSets, false, &packets, End::Err);
}

#[test]
fn local_infile_hands_the_turn_to_the_client() {
    let request = wire(&[b"\xfb/tmp/data.csv".to_vec()]);
    let mut scanner = ResponseScanner::new(Expect::ResultSets, caps(false));
    assert_eq!(feed(&mut scanner, &request, 4), vec![(request.len(), Progress::ClientTurn(ClientTurn::LocalInfile))]);
    let answer = wire(&[ok(AUTOCOMMIT)]);
    assert_eq!(feed(&mut scanner, &answer, 3), vec![(answer.len(), Progress::Done(End::Ok))]);
}

#[test]
fn prepare_response_has_parameter_and_column_definitions() {
    for deprecate_eof in [false, true] {
        for (params, columns) in [(0u16, 0u16), (2, 0), (0, 3), (2, 3)] {
            let mut ok = vec![0x00, 1, 0, 0, 0];
            ok.extend_from_slice(&columns.to_le_bytes());
            ok.extend_from_slice(&params.to_le_bytes());
            ok.extend_from_slice(&[0, 0, 0]);
            let mut packets = vec![ok];
            for count in [params, columns] {
                if count > 0 {
                    packets.extend((0..count).map(|_| column_def()));
                    if !deprecate_eof {
                        packets.push(eof(AUTOCOMMIT));
                    }
                }
            }
            assert_single_end(Expect::Prepare, deprecate_eof, &packets, End::Ok);
        }
    }
    assert_single_end(Expect::Prepare, true, &[err()], End::Err);
}

#[test]
fn cursor_response_ends_after_metadata() {
    let packets = vec![vec![1], column_def(), eof(AUTOCOMMIT | CURSOR)];
    assert_single_end(Expect::Cursor, false, &packets, End::Ok);
    let packets = vec![vec![1], column_def(), ok_end(AUTOCOMMIT | CURSOR)];
    assert_single_end(Expect::Cursor, true, &packets, End::Ok);
}

#[test]
fn a_stored_programs_open_cursor_does_not_end_a_result() {
    // MariaDB flags the results of a statement whose stored program holds a cursor open: the rows still follow.
    let with_rows = vec![vec![1], column_def(), eof(AUTOCOMMIT | CURSOR), row("1"), eof(AUTOCOMMIT | CURSOR)];
    assert_single_end(Expect::ResultSets, false, &with_rows, End::Ok);
    // Inside a CALL (results flagged with MORE) even an execute that asked for a cursor gets its rows now.
    let call = vec![
        vec![1],
        column_def(),
        eof(AUTOCOMMIT | CURSOR | MORE),
        row("1"),
        eof(AUTOCOMMIT | CURSOR | MORE),
        ok(AUTOCOMMIT),
    ];
    assert_single_end(Expect::Cursor, false, &call, End::Ok);
}

#[test]
fn progress_reports_do_not_end_a_response() {
    let progress = b"\xff\xff\xff\x01\x01\x02\x00\x10\x27\x00\x05stage".to_vec();
    for deprecate_eof in [false, true] {
        let mut packets = vec![progress.clone(), progress.clone()];
        packets.extend(result_set(1, 2, deprecate_eof, AUTOCOMMIT));
        assert_single_end(Expect::ResultSets, deprecate_eof, &packets, End::Ok);
        assert_single_end(Expect::ResultSets, deprecate_eof, &[progress.clone(), err()], End::Err);
    }
}

#[test]
fn fetch_and_field_list_end_at_eof() {
    let rows = vec![vec![0x00, 0x00, 1, 0, 0, 0], vec![0x00, 0x00, 2, 0, 0, 0], eof(AUTOCOMMIT | CURSOR)];
    assert_single_end(Expect::Rows, false, &rows, End::Ok);
    assert_single_end(Expect::FieldList, false, &[column_def(), column_def(), eof(AUTOCOMMIT)], End::Ok);
    assert_single_end(Expect::FieldList, true, &[err()], End::Err);
}

#[test]
fn auth_exchange_alternates_until_ok() {
    let switch = wire(&[b"\xfeclient_ed25519\0nonce".to_vec()]);
    let mut scanner = ResponseScanner::new(Expect::Auth, caps(true));
    assert_eq!(feed(&mut scanner, &switch, 5), vec![(switch.len(), Progress::ClientTurn(ClientTurn::Auth))]);
    let fast_ok = wire(&[vec![0x01, 0x03], ok(AUTOCOMMIT)]);
    assert_eq!(feed(&mut scanner, &fast_ok, 1), vec![(fast_ok.len(), Progress::Done(End::Ok))]);
    assert_single_end(Expect::Auth, true, &[err()], End::Err);
}

#[test]
fn a_row_beginning_with_0xfe_is_not_an_end() {
    // A first column longer than 2^24 bytes: its length prefix is 0xFE, the packet spans several frames.
    let mut long = vec![0xFE];
    long.extend_from_slice(&((MAX_PAYLOAD + 100) as u64).to_le_bytes());
    long.resize(long.len() + MAX_PAYLOAD + 100, b'x');
    let packets = vec![vec![1], column_def(), long, ok_end(AUTOCOMMIT)];
    let bytes = wire(&packets);
    let mut scanner = ResponseScanner::new(Expect::ResultSets, caps(true));
    assert_eq!(feed(&mut scanner, &bytes, 1 << 20), vec![(bytes.len(), Progress::Done(End::Ok))]);
}

#[test]
fn garbage_is_an_error_not_a_hang() {
    let bytes = wire(&[Vec::new()]);
    let mut scanner = ResponseScanner::new(Expect::ResultSets, caps(false));
    assert_eq!(scanner.scan(&bytes), Err(ProtocolError::Malformed("column count")));
}

#[test]
fn results_without_their_cached_definitions_end_where_they_should() {
    let cached = MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA.bits();
    for deprecate_eof in [false, true] {
        let caps = caps(deprecate_eof).with_mariadb(cached, cached);
        let end = if deprecate_eof { ok_end(AUTOCOMMIT) } else { eof(AUTOCOMMIT) };
        let mut with_defs = vec![vec![1, 1], column_def()];
        let mut without_defs = vec![vec![1, 0]];
        if !deprecate_eof {
            with_defs.push(eof(AUTOCOMMIT));
            without_defs.push(eof(AUTOCOMMIT));
        }
        for mut packets in [with_defs, without_defs] {
            packets.extend([row("1"), row("2"), end.clone()]);
            let bytes = wire(&packets);
            for chunk in [1, 3, bytes.len()] {
                let mut scanner = ResponseScanner::new(Expect::ResultSets, caps);
                let events = feed(&mut scanner, &bytes, chunk);
                assert_eq!(events, vec![(bytes.len(), Progress::Done(End::Ok))], "{packets:?}, chunk {chunk}");
            }
        }
    }
}
