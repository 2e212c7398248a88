//! Exact decimal numbers, for comparing DECIMAL sort keys and adding up the halves of a SUM.
//!
//! MySQL's DECIMAL holds up to 65 digits, more than a machine integer or a float holds exactly, so values are
//! kept as their digits, normalized so that equal numbers are equal values: `2.50`, `2.5` and `02.5` are one
//! number, and so are `-0` and `0`.

use std::cmp::Ordering;
use std::fmt;

/// An exact decimal number of any size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    negative: bool,
    /// Digits before the point (ASCII), without leading zeros.
    integer: Vec<u8>,
    /// Digits after the point (ASCII), without trailing zeros.
    fraction: Vec<u8>,
}

impl Decimal {
    /// Reads a decimal as MySQL writes one: an optional `-`, digits, and optionally `.` and more digits.
    pub fn parse(text: &[u8]) -> Option<Decimal> {
        let (negative, unsigned) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let (integer, fraction) = match unsigned.iter().position(|&b| b == b'.') {
            Some(dot) => (&unsigned[..dot], &unsigned[dot + 1..]),
            None => (unsigned, &[][..]),
        };
        let digits_only = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
        if integer.is_empty() && fraction.is_empty() || !digits_only(integer) || !digits_only(fraction) {
            return None;
        }
        Some(Decimal::normalized(negative, integer, fraction))
    }

    /// The decimal equal to an integer.
    pub fn from_integer(value: i128) -> Decimal {
        Decimal::normalized(value < 0, value.unsigned_abs().to_string().as_bytes(), b"")
    }

    /// Whether the number is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The exact sum of two decimals.
    pub fn add(&self, other: &Decimal) -> Decimal {
        let scale = self.fraction.len().max(other.fraction.len());
        let (a, b) = (self.scaled(scale), other.scaled(scale));
        let (negative, magnitude) = if self.negative == other.negative {
            (self.negative, add_magnitudes(&a, &b))
        } else {
            match compare_magnitudes(&a, &b) {
                Ordering::Less => (other.negative, subtract_magnitudes(&b, &a)),
                _ => (self.negative, subtract_magnitudes(&a, &b)),
            }
        };
        // Both operands have at least `scale` digits, and so does their sum or difference.
        let (integer, fraction) = magnitude.split_at(magnitude.len() - scale);
        Decimal::normalized(negative, integer, fraction)
    }

    /// The number written with at least `scale` digits after the point, as MySQL writes a DECIMAL(m, scale).
    pub fn to_text(&self, scale: usize) -> String {
        let mut text = String::with_capacity(self.integer.len() + scale + 3);
        if self.negative {
            text.push('-');
        }
        match self.integer.is_empty() {
            true => text.push('0'),
            false => text.extend(self.integer.iter().map(|&d| char::from(d))),
        }
        let places = scale.max(self.fraction.len());
        if places > 0 {
            text.push('.');
            text.extend(self.fraction.iter().map(|&d| char::from(d)));
            text.extend(std::iter::repeat_n('0', places - self.fraction.len()));
        }
        text
    }

    fn normalized(negative: bool, integer: &[u8], fraction: &[u8]) -> Decimal {
        let leading = integer.iter().take_while(|&&d| d == b'0').count();
        let kept = fraction.len() - fraction.iter().rev().take_while(|&&d| d == b'0').count();
        let integer = integer[leading..].to_vec();
        let fraction = fraction[..kept].to_vec();
        let negative = negative && !(integer.is_empty() && fraction.is_empty());
        Decimal { negative, integer, fraction }
    }

    /// The magnitude's digits times 10^`scale`, `scale` being at least the fraction's length.
    fn scaled(&self, scale: usize) -> Vec<u8> {
        let mut digits = Vec::with_capacity(self.integer.len() + scale);
        digits.extend_from_slice(&self.integer);
        digits.extend_from_slice(&self.fraction);
        digits.resize(self.integer.len() + scale, b'0');
        digits
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.integer
            .len()
            .cmp(&other.integer.len())
            .then_with(|| self.integer.cmp(&other.integer))
            .then_with(|| self.fraction.cmp(&other.fraction))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(0))
    }
}

/// Compares two runs of ASCII digits as numbers.
fn compare_magnitudes(a: &[u8], b: &[u8]) -> Ordering {
    let a = &a[a.iter().take_while(|&&d| d == b'0').count()..];
    let b = &b[b.iter().take_while(|&&d| d == b'0').count()..];
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The sum of two runs of ASCII digits.
fn add_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut sum = Vec::with_capacity(a.len().max(b.len()) + 1);
    let mut carry = 0;
    let (mut a, mut b) = (a.iter().rev(), b.iter().rev());
    loop {
        let (x, y) = (a.next(), b.next());
        if x.is_none() && y.is_none() {
            break;
        }
        let total = digit(x) + digit(y) + carry;
        sum.push(b'0' + total % 10);
        carry = total / 10;
    }
    if carry > 0 {
        sum.push(b'0' + carry);
    }
    sum.reverse();
    sum
}

/// `big - small` for runs of ASCII digits with `big >= small`.
fn subtract_magnitudes(big: &[u8], small: &[u8]) -> Vec<u8> {
    let mut difference = Vec::with_capacity(big.len());
    let mut borrow = 0;
    let mut small = small.iter().rev();
    for &d in big.iter().rev() {
        let subtrahend = digit(small.next()) + borrow;
        let minuend = d - b'0';
        let (value, next_borrow) = match minuend.checked_sub(subtrahend) {
            Some(value) => (value, 0),
            None => (minuend + 10 - subtrahend, 1),
        };
        difference.push(b'0' + value);
        borrow = next_borrow;
    }
    difference.reverse();
    difference
}

fn digit(d: Option<&u8>) -> u8 {
    d.map_or(0, |&d| d - b'0')
}
