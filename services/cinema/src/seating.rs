//! Seat suggestions over a seat map, ranked by the no-orphan rule.
//!
//! A row splits into sections at aisles and gaps (positions that are not consecutive).
//! A free seat is an orphan when nothing free is next to it in its section: it sits
//! between taken seats, or between a taken seat and the section's end. Holds enforce the
//! rule in `cinema_lock_seats` (migrations 0006 and 0007), under the hold's row locks, so racing
//! holds cannot strand a seat together. Suggestions prefer blocks that strand nobody by
//! the same definition (the SQL tests of the rule and the suggestion tests share cases).

use std::collections::BTreeSet;

use crate::domain::SeatState;
use crate::store::SeatRecord;

/// The seats of one section, left to right.
fn sections(map: &[SeatRecord]) -> Vec<Vec<&SeatRecord>> {
    let mut out: Vec<Vec<&SeatRecord>> = Vec::new();
    let mut seats: Vec<&SeatRecord> = map.iter().filter(|s| s.place.is_some()).collect();
    seats.sort_by(|a, b| {
        (a.row_label.len(), &a.row_label, position(a)).cmp(&(b.row_label.len(), &b.row_label, position(b)))
    });
    for seat in seats {
        match out.last_mut() {
            Some(section)
                if section.last().is_some_and(|prev| {
                    prev.row_label == seat.row_label && position(prev) + 1 == position(seat)
                }) =>
            {
                section.push(seat)
            }
            _ => out.push(vec![seat]),
        }
    }
    out
}

fn position(seat: &SeatRecord) -> i32 {
    seat.place.map_or(0, |p| p.position)
}

fn is_free(seat: &SeatRecord) -> bool {
    seat.state == SeatState::Available
}

/// Free seats of `section` with no free neighbour, when the seats in `taking` are taken.
fn orphans<'a>(section: &[&'a SeatRecord], taking: &BTreeSet<&str>) -> BTreeSet<&'a str> {
    let free = |i: usize| is_free(section[i]) && !taking.contains(section[i].seat_id.as_str());
    (0..section.len())
        .filter(|&i| free(i) && !(i > 0 && free(i - 1)) && !(i + 1 < section.len() && free(i + 1)))
        .map(|i| section[i].seat_id.as_str())
        .collect()
}

/// What a party asks `suggest` for.
pub struct PartyRequest<'a> {
    pub count: usize,
    pub category: Option<&'a str>,
    /// Accessible seats only when asked for: then the block must include one.
    pub accessible: bool,
}

/// The best block of `count` free adjacent seats, centre of the screen first: rows
/// nearest the middle row, then seats nearest the middle of the screen's width.
/// Blocks that strand a seat are only offered when no other block exists.
pub fn suggest(map: &[SeatRecord], party: &PartyRequest<'_>) -> Option<Vec<String>> {
    let rows: Vec<&str> = {
        let mut labels: Vec<&str> = map.iter().map(|s| s.row_label.as_str()).collect();
        labels.sort_by_key(|l| (l.len(), *l));
        labels.dedup();
        labels
    };
    let middle_row = (rows.len() as f64 - 1.0) / 2.0;
    let (min_pos, max_pos) = map
        .iter()
        .filter(|s| s.place.is_some())
        .map(position)
        .fold((i32::MAX, i32::MIN), |(lo, hi), p| (lo.min(p), hi.max(p)));
    let middle_pos = (f64::from(min_pos) + f64::from(max_pos)) / 2.0;

    let mut best: Option<(bool, f64, Vec<String>)> = None;
    let none = BTreeSet::new();
    for section in sections(map) {
        if party.count == 0 || section.len() < party.count {
            continue;
        }
        // A hold only changes its own section: checking that keeps this linear-ish
        // in the seat count even for very large screens.
        let before = orphans(&section, &none);
        let row_index = rows.iter().position(|r| *r == section[0].row_label).unwrap_or(0) as f64;
        for window in section.windows(party.count) {
            let fits = window.iter().all(|s| {
                is_free(s)
                    && party.category.is_none_or(|c| s.category == c)
                    && (party.accessible || !accessible(s))
            });
            if !fits || (party.accessible && !window.iter().any(|s| accessible(s))) {
                continue;
            }
            let taking: BTreeSet<&str> = window.iter().map(|s| s.seat_id.as_str()).collect();
            let strands = orphans(&section, &taking).difference(&before).next().is_some();
            let centre =
                (f64::from(position(window[0])) + f64::from(position(window[party.count - 1]))) / 2.0;
            let distance = (row_index - middle_row).powi(2) + (centre - middle_pos).powi(2);
            let better = best
                .as_ref()
                .is_none_or(|(b_strands, b_distance, _)| (strands, distance) < (*b_strands, *b_distance));
            if better {
                best = Some((strands, distance, window.iter().map(|s| s.seat_id.clone()).collect()));
            }
        }
    }
    best.map(|(_, _, seats)| seats)
}

fn accessible(seat: &SeatRecord) -> bool {
    seat.place.is_some_and(|p| p.accessible)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;
    use crate::store::SeatPlace;

    /// `layout` per row: `.` free, `x` taken, `a` free accessible, `|` an aisle.
    fn map(rows: &[&str]) -> Vec<SeatRecord> {
        let mut seats = Vec::new();
        for (r, layout) in rows.iter().enumerate() {
            let label = char::from(b'A' + r as u8).to_string();
            let (mut position, mut number) = (0, 0);
            for c in layout.chars() {
                position += 1;
                if c == '|' {
                    continue;
                }
                number += 1;
                seats.push(SeatRecord {
                    seat_id: format!("{label}{number}"),
                    row_label: label.clone(),
                    seat_number: number,
                    category: "standard".into(),
                    price: Money::parse(100, "EUR").unwrap(),
                    state: if c == 'x' { SeatState::Booked } else { SeatState::Available },
                    place: Some(SeatPlace { position, accessible: c == 'a', companion: false }),
                });
            }
        }
        seats
    }

    #[test]
    fn suggestions_prefer_the_centre_and_avoid_strays_and_accessible_seats() {
        let seats = map(&["......", "..aa..", "......"]);
        let pair = |count, accessible| PartyRequest { count, category: None, accessible };
        assert_eq!(suggest(&seats, &pair(2, false)).unwrap(), ["A3", "A4"]);
        assert_eq!(suggest(&seats, &pair(2, true)).unwrap(), ["B3", "B4"]);
        assert_eq!(suggest(&seats, &pair(3, false)).unwrap(), ["A1", "A2", "A3"]);
        assert_eq!(suggest(&seats, &pair(7, false)), None);
    }
}
