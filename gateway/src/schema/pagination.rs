//! Relay cursors over the upstream services' page tokens (movies, bookings,
//! notifications).
//!
//! An upstream only hands out a token for the start of the next page, but relay gives
//! every edge a cursor. A cursor is therefore "that page token, then skip n items".
//! The last edge of a page points at the next token with no skip, so a client that
//! follows `endCursor` always pages by plain tokens.

use async_graphql::OutputType;
use async_graphql::connection::{Connection, CursorType, Edge};

use crate::error::GatewayError;

pub const DEFAULT_PAGE: i32 = 20;
pub const MAX_PAGE: i32 = 100;
/// A cursor points inside one upstream page (at most MAX_PAGE items, every service's
/// cap), so it never skips more; one request therefore never fetches more than one page.
const MAX_SKIP: u32 = MAX_PAGE as u32;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageCursor {
    page_token: String,
    skip: u32,
}

impl PageCursor {
    pub fn parse(raw: &str) -> Result<Self, GatewayError> {
        Self::decode_cursor(raw).map_err(|_| GatewayError::bad_input("`after` is not a valid cursor"))
    }
}

impl CursorType for PageCursor {
    type Error = &'static str;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        let (skip, page_token) = s.split_once('.').ok_or("no separator")?;
        let skip: u32 = skip.parse().map_err(|_| "skip is not a number")?;
        if skip > MAX_SKIP {
            return Err("skip too large");
        }
        Ok(Self { page_token: page_token.to_owned(), skip })
    }

    fn encode_cursor(&self) -> String {
        format!("{}.{}", self.skip, self.page_token)
    }
}

/// What to ask the upstream for, given `first` and `after`.
#[derive(Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub page_token: String,
    pub page_size: i32,
    skip: u32,
    first: usize,
}

/// The edges to show, and whether more follow them.
pub struct Paged<T> {
    pub edges: Vec<(PageCursor, T)>,
    pub has_next_page: bool,
}

impl PageRequest {
    pub fn new(first: Option<i32>, after: Option<&str>) -> Result<Self, GatewayError> {
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(GatewayError::bad_input(format!("`first` must be between 1 and {MAX_PAGE}")));
        }
        let start = after.map(PageCursor::parse).transpose()?.unwrap_or_default();
        // skip <= MAX_SKIP, so the sum always fits. Upstreams cap a page at MAX_PAGE; a
        // capped page still ends exactly where its next token starts, so the cursors
        // stay right and the page just shows fewer than `first` items.
        let page_size = (first + start.skip as i32).min(MAX_PAGE);
        // first is 1..=MAX_PAGE here.
        let first = usize::try_from(first).unwrap_or(1);
        Ok(Self { page_token: start.page_token, page_size, skip: start.skip, first })
    }

    /// Pairs each item of the fetched page (past the skipped ones, at most `first`)
    /// with its cursor.
    pub fn page<T>(&self, fetched: Vec<T>, next_page_token: &str) -> Paged<T> {
        let mut kept: Vec<T> = fetched.into_iter().skip(self.skip as usize).collect();
        // An upstream that ignored page_size: show `first`, page on by position.
        let truncated = kept.len() > self.first;
        kept.truncate(self.first);
        let next_page_token = if truncated { "" } else { next_page_token };
        let has_next_page = truncated || !next_page_token.is_empty();
        let count = kept.len();
        let edges = kept
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let cursor = if i + 1 == count && !next_page_token.is_empty() {
                    PageCursor { page_token: next_page_token.to_owned(), skip: 0 }
                } else {
                    let skip = self.skip.saturating_add(u32::try_from(i + 1).unwrap_or(u32::MAX));
                    PageCursor { page_token: self.page_token.clone(), skip }
                };
                (cursor, item)
            })
            .collect();
        Paged { edges, has_next_page }
    }
}

impl<T> Paged<T> {
    /// The relay connection over these edges (`edges`, `nodes`, `pageInfo`).
    pub fn into_connection<N: OutputType>(self, node: impl Fn(T) -> N) -> Connection<PageCursor, N> {
        let mut connection = Connection::new(false, self.has_next_page);
        connection.edges =
            self.edges.into_iter().map(|(cursor, item)| Edge::new(cursor, node(item))).collect();
        connection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_page_uses_no_token_and_the_default_size() {
        let request = PageRequest::new(None, None).unwrap();
        assert_eq!((request.page_token.as_str(), request.page_size), ("", DEFAULT_PAGE));
    }

    #[test]
    fn last_edge_points_at_the_next_token_and_others_skip_into_this_page() {
        let request = PageRequest::new(Some(3), None).unwrap();
        let edges = request.page(vec!["a", "b", "c"], "tok2").edges;
        let cursors: Vec<String> = edges.iter().map(|(c, _)| c.encode_cursor()).collect();
        assert_eq!(cursors, vec!["1.", "2.", "0.tok2"]);

        // Resuming after "b" re-reads this page and skips the first two movies.
        let resumed = PageRequest::new(Some(3), Some("2.")).unwrap();
        assert_eq!((resumed.page_token.as_str(), resumed.page_size), ("", 5));
        let edges = resumed.page(vec!["a", "b", "c", "d", "e"], "tok3").edges;
        assert_eq!(edges.iter().map(|(_, m)| *m).collect::<Vec<_>>(), vec!["c", "d", "e"]);
        assert_eq!(edges[2].0.encode_cursor(), "0.tok3");
    }

    #[test]
    fn the_final_page_keeps_positional_cursors() {
        let request = PageRequest::new(Some(5), Some("0.tok9")).unwrap();
        let page = request.page(vec!["y", "z"], "");
        assert_eq!(page.edges[1].0.encode_cursor(), "2.tok9");
        assert!(!page.has_next_page);
    }

    #[test]
    fn a_page_never_shows_more_than_first_nor_asks_for_more_than_the_cap() {
        let request = PageRequest::new(Some(2), None).unwrap();
        let page = request.page(vec!["a", "b", "c"], "");
        assert_eq!(page.edges.iter().map(|(_, m)| *m).collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(page.has_next_page, "the third item is still to come");
        assert_eq!(page.edges[1].0.encode_cursor(), "2.");

        let deep = PageRequest::new(Some(MAX_PAGE), Some("60.tok")).unwrap();
        assert_eq!(deep.page_size, MAX_PAGE);
        let fetched: Vec<i32> = (0..MAX_PAGE).collect();
        let page = deep.page(fetched, "tok2");
        assert_eq!(page.edges.len(), (MAX_PAGE - 60) as usize);
        assert_eq!(page.edges.last().unwrap().0.encode_cursor(), "0.tok2");
        assert!(page.has_next_page);
    }

    #[test]
    fn rejects_bad_sizes_and_cursors() {
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(Some(MAX_PAGE + 1), None).is_err());
        assert!(PageRequest::new(Some(-1), None).is_err());
        assert!(PageRequest::new(None, Some("garbage")).is_err());
        assert!(PageRequest::new(None, Some("99999.tok")).is_err());
        assert!(PageRequest::new(None, Some("101.tok")).is_err());
    }
}
