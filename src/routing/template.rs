//! A route with holes where the statement's literals go: what the route cache keeps, made from the route of a
//! probe (the statement with each maskable literal replaced by a marker) and filled in with the literals of each
//! statement that hits the entry.
//!
//! Every statement a route sends is made by splicing text into the client's bytes, so a literal reaches each of
//! them, if at all, as a copy of its bytes. The router never reads a maskable literal's value (see
//! `routing/masking.rs`), so the probe's route differs from the statement's only where the markers stand: finding
//! the markers in the probe's statements finds where each literal goes. Markers are digit strings no statement
//! holds, in the literal's own quotes for a string, so the probe parses as the statement does.

use std::ops::Range;

use super::literals::{Literal, LiteralKind};
use super::{FanOut, Inline, MergeRead, MergeServers, Rewritten, Route};

/// The digits every marker holds, and which a statement and its uncached route must not hold for a marker to be
/// found only where a literal went.
pub const MARKER_CORE: &[u8] = b"9753108";

/// Digits of the literal's index in a marker (statements with more literals are not cached).
const INDEX_DIGITS: usize = 6;

/// The largest number of literals a cached statement may have.
pub const MAX_LITERALS: usize = 999_999;

/// The marker standing for literal `index` of kind `kind` in a probe.
pub fn marker(index: usize, kind: LiteralKind) -> Vec<u8> {
    let digits = format!("{}{index:0width$}", String::from_utf8_lossy(MARKER_CORE), width = INDEX_DIGITS);
    match kind {
        LiteralKind::Number => digits.into_bytes(),
        LiteralKind::Quoted(quote) => [&[quote], digits.as_bytes(), &[quote]].concat(),
    }
}

/// A route whose statements have holes for literals.
#[derive(Debug, Clone)]
pub struct RouteTemplate {
    /// The probe's route with its statement texts taken out; cloned and filled on a hit.
    skeleton: Route,
    /// Each statement text of the route, in the order [`texts`] gives them.
    texts: Vec<Template>,
}

impl RouteTemplate {
    /// The template made from `probe`, the route of the statement with the literals `masked` marks replaced by
    /// their markers; `None` when a route of that kind is not cached (a refusal) or a marker was cut or met
    /// where a position of the route points.
    pub fn from_probe(mut probe: Route, literals: &[Literal], masked: &[bool]) -> Option<RouteTemplate> {
        let texts = texts(&mut probe)?
            .into_iter()
            .map(|slot| {
                let template = Template::from_probe(slot.text, &slot.positions, literals, masked);
                slot.text.clear();
                template
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RouteTemplate { skeleton: probe, texts })
    }

    /// The route for a statement whose literals are `literal(i)`.
    pub fn render<'b>(&self, literal: impl Fn(usize) -> &'b [u8]) -> Route {
        let mut route = self.skeleton.clone();
        let slots = texts(&mut route).expect("a template's skeleton has texts");
        for (slot, template) in slots.into_iter().zip(&self.texts) {
            template.render_into(slot, &literal);
        }
        route
    }

    /// The bytes the template holds, for the cache's memory bound.
    pub fn size(&self) -> usize {
        let pieces = self.texts.iter().map(Template::size).sum::<usize>();
        pieces + std::mem::size_of::<Route>() + std::mem::size_of::<MergeRead>()
    }
}

/// Whether the cache may keep `route`: not a refusal, whose message may quote the statement's values, nor a merged
/// read carrying one.
pub fn is_cacheable(route: &Route) -> bool {
    match route {
        Route::Refuse(_) => false,
        Route::FanOut(FanOut::Merge(read)) => !matches!(read.servers, MergeServers::OneServer { union: Err(_) }),
        _ => true,
    }
}

/// One statement text of a route and the byte offsets into it the route carries ([`Inline::at`]).
struct TextSlot<'r> {
    text: &'r mut Vec<u8>,
    positions: Vec<&'r mut usize>,
}

/// Every statement text of `route`, in a fixed order; `None` for a route the cache does not keep
/// ([`is_cacheable`]).
fn texts(route: &mut Route) -> Option<Vec<TextSlot<'_>>> {
    let slot = |text| TextSlot { text, positions: Vec::new() };
    Some(match route {
        Route::Passthrough | Route::Block(_) => Vec::new(),
        Route::Refuse(_) => return None,
        Route::Rewrite(Rewritten { sql, inline, check, .. }) => {
            let mut slots = holed(sql, inline);
            slots.push(slot(check));
            slots
        }
        Route::FanOut(FanOut::Union(sql)) => vec![slot(sql)],
        Route::FanOut(FanOut::Writes { old, extended, inline, .. }) => {
            let mut slots = vec![slot(old)];
            slots.extend(holed(extended, inline));
            slots
        }
        Route::FanOut(FanOut::Merge(read)) => {
            let MergeRead { old, extended, servers, .. } = &mut **read;
            match servers {
                MergeServers::OneServer { union } => vec![slot(old), slot(extended), slot(union.as_mut().ok()?)],
                MergeServers::TwoServers { old_widened, inline } => {
                    let mut slots = vec![slot(old), slot(old_widened)];
                    slots.extend(holed(extended, inline));
                    slots
                }
            }
        }
    })
}

/// A statement with holes for subqueries' values, and those subqueries.
fn holed<'r>(text: &'r mut Vec<u8>, inline: &'r mut [Inline]) -> Vec<TextSlot<'r>> {
    let (positions, queries): (Vec<&mut usize>, Vec<&mut Vec<u8>>) =
        inline.iter_mut().map(|Inline { at, query }| (at, query)).unzip();
    let queries = queries.into_iter().map(|text| TextSlot { text, positions: Vec::new() });
    std::iter::once(TextSlot { text, positions }).chain(queries).collect()
}

/// Constant bytes, and the literals between them.
#[derive(Debug, Clone)]
struct Template {
    pieces: Vec<Piece>,
    /// For each position of the text, the piece it falls before (positions sit between pieces).
    marks: Vec<usize>,
    /// The bytes of the constant pieces.
    constant: usize,
}

#[derive(Debug, Clone)]
enum Piece {
    Constant(Box<[u8]>),
    /// The bytes of the statement's literal of this index, quotes included.
    Literal(usize),
}

impl Piece {
    /// The bytes of a constant piece.
    fn len(&self) -> usize {
        match self {
            Piece::Constant(bytes) => bytes.len(),
            Piece::Literal(_) => 0,
        }
    }
}

/// A place where a probe's statement text is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cut {
    /// The route's position of this index points here.
    Position(usize),
    /// The marker of the literal of this index stands here.
    Literal(usize),
}

impl Template {
    /// Splits `text`, a statement of the probe's route, at its markers and at `positions`.
    fn from_probe(text: &[u8], positions: &[&mut usize], literals: &[Literal], masked: &[bool]) -> Option<Template> {
        let mut cuts: Vec<(Range<usize>, Cut)> = markers_in(text, literals, masked)?;
        cuts.extend(positions.iter().enumerate().map(|(i, &&mut at)| (at..at, Cut::Position(i))));
        cuts.sort_by_key(|(range, cut)| (range.start, *cut));
        let mut pieces = Vec::new();
        let mut marks = vec![0; positions.len()];
        let mut at = 0;
        for (range, cut) in cuts {
            if range.start < at || range.end > text.len() {
                return None;
            }
            if range.start > at {
                pieces.push(Piece::Constant(text[at..range.start].into()));
            }
            match cut {
                Cut::Literal(index) => pieces.push(Piece::Literal(index)),
                Cut::Position(position) => marks[position] = pieces.len(),
            }
            at = range.end;
        }
        if at < text.len() {
            pieces.push(Piece::Constant(text[at..].into()));
        }
        let constant = pieces.iter().map(Piece::len).sum();
        Some(Template { pieces, marks, constant })
    }

    /// Writes the text for the literals `literal(i)` into `slot`, and its positions.
    fn render_into<'b>(&self, slot: TextSlot<'_>, literal: &impl Fn(usize) -> &'b [u8]) {
        let text = slot.text;
        text.reserve(self.constant + 64);
        let mut starts = Vec::with_capacity(self.pieces.len() + 1);
        for piece in &self.pieces {
            starts.push(text.len());
            match piece {
                Piece::Constant(bytes) => text.extend_from_slice(bytes),
                Piece::Literal(index) => text.extend_from_slice(literal(*index)),
            }
        }
        starts.push(text.len());
        for (position, &piece) in slot.positions.into_iter().zip(&self.marks) {
            *position = starts[piece];
        }
    }

    fn size(&self) -> usize {
        self.constant + self.pieces.len() * std::mem::size_of::<Piece>() + self.marks.len() * 8
    }
}

/// Where the markers of the masked literals stand in `text`, each with its literal's index; `None` when the
/// marker core appears otherwise than as a whole marker of a masked literal.
fn markers_in(text: &[u8], literals: &[Literal], masked: &[bool]) -> Option<Vec<(Range<usize>, Cut)>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = find(&text[from..], MARKER_CORE) {
        let core = from + offset;
        let digits = text.get(core + MARKER_CORE.len()..core + MARKER_CORE.len() + INDEX_DIGITS)?;
        let index: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let kind = literals.get(index).filter(|_| masked[index])?.kind;
        let marker = marker(index, kind);
        let start = core - usize::from(kind != LiteralKind::Number);
        let range = start..start + marker.len();
        if text.get(range.clone())? != marker.as_slice() {
            return None;
        }
        let digit_at = |at: Option<usize>| at.and_then(|at| text.get(at)).is_some_and(u8::is_ascii_digit);
        if kind == LiteralKind::Number && (digit_at(start.checked_sub(1)) || digit_at(Some(range.end))) {
            return None;
        }
        from = range.end;
        found.push((range, Cut::Literal(index)));
    }
    Some(found)
}

/// The offset of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Rights;
    use crate::topology::Server;

    fn literals() -> Vec<Literal> {
        let literal = |range, kind| Literal { range, kind };
        vec![
            literal(0..1, LiteralKind::Number),
            literal(1..2, LiteralKind::Quoted(b'\'')),
            literal(2..3, LiteralKind::Number),
        ]
    }

    fn rewrite(sql: Vec<u8>, at: usize, query: Vec<u8>) -> Route {
        let inline = vec![Inline { at, query }];
        let check = Vec::new();
        Route::Rewrite(Rewritten { sql, on: Server::Csmh, inserts: false, inline, rights: Rights::default(), check })
    }

    #[test]
    fn a_route_is_cut_at_its_markers_and_filled_with_other_literals() {
        let (number, string) = (marker(0, LiteralKind::Number), marker(1, LiteralKind::Quoted(b'\'')));
        let sql = [b"SELECT ".as_slice(), &number, b", ", &string, b" FROM t WHERE a IN "].concat();
        let query = [b"SELECT b FROM u WHERE c = ".as_slice(), &string].concat();
        let probe = rewrite(sql.clone(), sql.len(), query);
        let template = RouteTemplate::from_probe(probe, &literals(), &[true, true, false]).unwrap();
        let values: [&[u8]; 3] = [b"4242", b"'it''s'", b"7"];
        let route = template.render(|i| values[i]);
        let sql = b"SELECT 4242, 'it''s' FROM t WHERE a IN ".to_vec();
        assert_eq!(route, rewrite(sql.clone(), sql.len(), b"SELECT b FROM u WHERE c = 'it''s'".to_vec()));
    }

    #[test]
    fn markers_that_are_cut_or_unknown_spoil_the_template() {
        let number = marker(0, LiteralKind::Number);
        let cut = [b"SELECT 1".as_slice(), &number].concat();
        let unmasked = [b"SELECT ".as_slice(), &marker(2, LiteralKind::Number)].concat();
        let unquoted = [b"SELECT ".as_slice(), &marker(1, LiteralKind::Number)].concat();
        let inside = [b"SELECT ".as_slice(), &number].concat();
        for (sql, at) in [(cut, 0), (unmasked, 0), (unquoted, 0), (inside.clone(), inside.len() - 2)] {
            let probe = rewrite(sql.clone(), at, Vec::new());
            assert!(RouteTemplate::from_probe(probe, &literals(), &[true, true, false]).is_none(), "{sql:?}");
        }
    }
}
