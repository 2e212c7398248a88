//! The values the merge compares, read from a row's cell by its column's kind in either protocol, and ordered as
//! MySQL orders them: integers and DECIMALs as exact numbers (`9 < 10`, `2.50 = 2.5`), floating-point numbers
//! as numbers, dates and times by their parts, strings of byte-ordered collations by bytes, and NULL before
//! everything — first ascending, last descending.
//!
//! Text dates and times are read into the same parts as binary ones, so values written with different
//! fractional precision still compare right.

use std::cmp::Ordering;

use bytes::Bytes;

use super::column::{KeyKind, Padding};
use super::decimal::Decimal;
use super::row::{Cell, Protocol, Unreadable};

/// A value as the merge compares it.
#[derive(Debug, Clone)]
pub enum Key {
    /// NULL: before every other value.
    Null,
    /// An integer of any MySQL integer type, signed or unsigned.
    Integer(i128),
    /// A DECIMAL.
    Decimal(Decimal),
    /// A FLOAT or DOUBLE (finite, and `-0` read as `0`).
    Float(f64),
    /// A DATE, DATETIME or TIMESTAMP (a DATE has a zero time).
    DateTime(DateTime),
    /// A TIME, in microseconds (it may be negative).
    Time(i128),
    /// A string of a collation that orders by bytes.
    Bytes {
        /// The value's bytes, shared with the row.
        bytes: Bytes,
        /// How the collation treats trailing spaces.
        padding: Padding,
    },
}

/// The parts of a DATE, DATETIME or TIMESTAMP, most significant first, so they order as the values do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    /// Year (0 in a zero date).
    pub year: u16,
    /// Month, 1–12 (0 in a zero date).
    pub month: u8,
    /// Day, 1–31 (0 in a zero date).
    pub day: u8,
    /// Hour.
    pub hour: u8,
    /// Minute.
    pub minute: u8,
    /// Second.
    pub second: u8,
    /// Microseconds.
    pub micro: u32,
}

impl Key {
    /// The value of a column of `kind` whose cell in `row` (as sent in `protocol`) is `cell`, `None` for NULL.
    pub(super) fn read(kind: KeyKind, protocol: Protocol, row: &Bytes, cell: Option<&Cell>) -> Result<Key, Unreadable> {
        let Some(cell) = cell else {
            return Ok(Key::Null);
        };
        let value = &row[cell.value.clone()];
        let text = protocol == Protocol::Text;
        let read = match kind {
            KeyKind::Bytes(padding) => return string(row.slice(cell.value.clone()), padding),
            KeyKind::Decimal => Decimal::parse(value).map(Key::Decimal).ok_or("not a decimal number"),
            KeyKind::Integer { .. } if text => parse_integer(value).map(Key::Integer).ok_or("not an integer"),
            KeyKind::Integer { unsigned } => read_integer(value, unsigned).map(Key::Integer).ok_or("bad integer width"),
            KeyKind::Float | KeyKind::Double if text => parse_float(value).map(float).ok_or("not a finite number"),
            KeyKind::Float | KeyKind::Double => read_float(value).map(float).ok_or("bad float width"),
            KeyKind::Date | KeyKind::DateTime if text => parse_datetime(value).map(Key::DateTime).ok_or("not a date"),
            KeyKind::Date | KeyKind::DateTime => {
                read_binary_datetime(value).map(Key::DateTime).ok_or("bad date length")
            }
            KeyKind::Time if text => parse_time(value).map(Key::Time).ok_or("not a time"),
            KeyKind::Time => read_binary_time(value).map(Key::Time).ok_or("bad time length"),
        };
        read.map_err(Unreadable::Malformed)
    }

    /// Where values of different kinds fall, which only matters to keep the order total: the merge compares
    /// only values of one family in a column.
    fn rank(&self) -> u8 {
        match self {
            Key::Null => 0,
            Key::Integer(_) | Key::Decimal(_) => 1,
            Key::Float(_) => 2,
            Key::DateTime(_) => 3,
            Key::Time(_) => 4,
            Key::Bytes { .. } => 5,
        }
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Integer(a), Key::Integer(b)) => a.cmp(b),
            (Key::Integer(a), Key::Decimal(b)) => Decimal::from_integer(*a).cmp(b),
            (Key::Decimal(a), Key::Integer(b)) => a.cmp(&Decimal::from_integer(*b)),
            (Key::Decimal(a), Key::Decimal(b)) => a.cmp(b),
            (Key::Float(a), Key::Float(b)) => a.total_cmp(b),
            (Key::DateTime(a), Key::DateTime(b)) => a.cmp(b),
            (Key::Time(a), Key::Time(b)) => a.cmp(b),
            (Key::Bytes { bytes: a, padding: pa }, Key::Bytes { bytes: b, padding: pb }) => {
                compare_strings(a, b, *pa == Padding::Space || *pb == Padding::Space)
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

/// A string key. With an unknown padding rule, only strings on which both rules agree are read: with no byte
/// below the space and no trailing space, when one string is a prefix of another, the rest of the longer holds
/// a byte above the space, so both rules put the shorter first.
fn string(bytes: Bytes, padding: Padding) -> Result<Key, Unreadable> {
    let pads_alike = bytes.last() != Some(&b' ') && bytes.iter().all(|&b| b >= b' ');
    if padding == Padding::Unknown && !pads_alike {
        return Err(Unreadable::AmbiguousPadding);
    }
    Ok(Key::Bytes { bytes, padding })
}

/// Compares strings by bytes; with `pad_space`, the shorter one as if padded with spaces (so `'a' = 'a  '`
/// and `'a\t' < 'a'`).
fn compare_strings(a: &[u8], b: &[u8], pad_space: bool) -> Ordering {
    let common = a.len().min(b.len());
    let prefix = a[..common].cmp(&b[..common]);
    if prefix != Ordering::Equal || !pad_space {
        return prefix.then(a.len().cmp(&b.len()));
    }
    let (tail, longer_is) = match a.len() > b.len() {
        true => (&a[common..], Ordering::Greater),
        false => (&b[common..], Ordering::Less),
    };
    match tail.iter().find(|&&c| c != b' ') {
        None => Ordering::Equal,
        Some(&c) if c > b' ' => longer_is,
        Some(_) => longer_is.reverse(),
    }
}

/// A finite floating-point number as MySQL writes one.
fn parse_float(text: &[u8]) -> Option<f64> {
    let number: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    number.is_finite().then_some(number)
}

/// A little-endian FLOAT (4 bytes) or DOUBLE (8 bytes).
fn read_float(value: &[u8]) -> Option<f64> {
    match value.len() {
        4 => value.first_chunk::<4>().map(|b| f64::from(f32::from_le_bytes(*b))),
        8 => value.first_chunk::<8>().map(|b| f64::from_le_bytes(*b)),
        _ => None,
    }
}

/// A float as a key: `-0` is `0`, as in MySQL.
fn float(x: f64) -> Key {
    Key::Float(if x == 0.0 { 0.0 } else { x })
}

/// An integer as MySQL writes one: an optional `-` and decimal digits.
pub(super) fn parse_integer(text: &[u8]) -> Option<i128> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let magnitude = digits.iter().try_fold(0i128, |n, &d| d.is_ascii_digit().then(|| n * 10 + i128::from(d - b'0')))?;
    Some(if negative { -magnitude } else { magnitude })
}

/// A little-endian integer of 1, 2, 4 or 8 bytes.
fn read_integer(bytes: &[u8], unsigned: bool) -> Option<i128> {
    if !matches!(bytes.len(), 1 | 2 | 4 | 8) {
        return None;
    }
    let mut word = [0u8; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    let raw = u64::from_le_bytes(word);
    Some(match unsigned {
        true => i128::from(raw),
        false => {
            let shift = 64 - 8 * bytes.len() as u32;
            i128::from(((raw << shift) as i64) >> shift)
        }
    })
}

/// `YYYY-MM-DD`, optionally followed by ` HH:MM:SS` and a fraction of up to six digits.
fn parse_datetime(text: &[u8]) -> Option<DateTime> {
    let (date, time) = match text.iter().position(|&b| b == b' ') {
        Some(space) => (&text[..space], Some(&text[space + 1..])),
        None => (text, None),
    };
    let [year, month, day] = fields::<3>(date, b'-')?;
    let (hour, minute, second, micro) = match time {
        Some(time) => parse_clock(time)?,
        None => (0, 0, 0, 0),
    };
    Some(DateTime {
        year: u16::try_from(year).ok()?,
        month: u8::try_from(month).ok()?,
        day: u8::try_from(day).ok()?,
        hour: u8::try_from(hour).ok()?,
        minute: u8::try_from(minute).ok()?,
        second: u8::try_from(second).ok()?,
        micro,
    })
}

/// `[-]H:MM:SS[.ffffff]` (hours may run past 24), in microseconds.
fn parse_time(text: &[u8]) -> Option<i128> {
    let (negative, clock) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (hours, minutes, seconds, micro) = parse_clock(clock)?;
    let magnitude = microseconds(0, hours, minutes, seconds, micro);
    Some(if negative { -magnitude } else { magnitude })
}

/// `H:MM:SS[.f]`: hours, minutes, seconds and microseconds.
fn parse_clock(text: &[u8]) -> Option<(u32, u32, u32, u32)> {
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], Some(&text[dot + 1..])),
        None => (text, None),
    };
    let [hours, minutes, seconds] = fields::<3>(whole, b':')?;
    let micro = match fraction {
        Some(f) if !f.is_empty() && f.len() <= 6 => number(f)? * 10u32.pow(6 - f.len() as u32),
        Some(_) => return None,
        None => 0,
    };
    Some((hours, minutes, seconds, micro))
}

/// Exactly `N` runs of digits separated by `separator`.
fn fields<const N: usize>(text: &[u8], separator: u8) -> Option<[u32; N]> {
    let mut parts = text.split(|&b| b == separator);
    let mut out = [0; N];
    for slot in &mut out {
        *slot = number(parts.next()?)?;
    }
    parts.next().is_none().then_some(out)
}

/// A run of one to nine decimal digits.
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
}

/// A binary DATE/DATETIME/TIMESTAMP: 0, 4 (date), 7 (and time) or 11 bytes (and microseconds).
fn read_binary_datetime(value: &[u8]) -> Option<DateTime> {
    let mut parts = DateTime::default();
    if value.is_empty() {
        return Some(parts);
    }
    if !matches!(value.len(), 4 | 7 | 11) {
        return None;
    }
    parts.year = u16::from_le_bytes([value[0], value[1]]);
    (parts.month, parts.day) = (value[2], value[3]);
    if value.len() >= 7 {
        (parts.hour, parts.minute, parts.second) = (value[4], value[5], value[6]);
    }
    if value.len() == 11 {
        parts.micro = u32::from_le_bytes([value[7], value[8], value[9], value[10]]);
    }
    Some(parts)
}

/// A binary TIME: 0, 8 (sign, days, hours, minutes, seconds) or 12 bytes (and microseconds).
fn read_binary_time(value: &[u8]) -> Option<i128> {
    match value.len() {
        0 => return Some(0),
        8 | 12 => {}
        _ => return None,
    }
    let days = u32::from_le_bytes([value[1], value[2], value[3], value[4]]);
    let micro = value.get(8..12).map_or(0, |m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    let magnitude = microseconds(days, value[5].into(), value[6].into(), value[7].into(), micro);
    Some(if value[0] == 1 { -magnitude } else { magnitude })
}

fn microseconds(days: u32, hours: u32, minutes: u32, seconds: u32, micro: u32) -> i128 {
    let seconds = ((i128::from(days) * 24 + i128::from(hours)) * 60 + i128::from(minutes)) * 60 + i128::from(seconds);
    seconds * 1_000_000 + i128::from(micro)
}
