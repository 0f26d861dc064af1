//! Relay cursors over the cinema service's page tokens.
//!
//! The cinema service only hands out a token for the start of the next page, but
//! relay gives every edge a cursor. A cursor is therefore "that page token, then skip
//! n movies". The last edge of a page points at the next token with no skip, so a
//! client that follows `endCursor` always pages by plain tokens.

use async_graphql::connection::CursorType;

use crate::error::GatewayError;

pub const DEFAULT_PAGE: i32 = 20;
pub const MAX_PAGE: i32 = 100;
/// Bounds how far past a token a cursor may point, so a cursor cannot make one
/// request fetch an unbounded page.
const MAX_SKIP: u32 = 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MovieCursor {
    page_token: String,
    skip: u32,
}

impl MovieCursor {
    pub fn parse(raw: &str) -> Result<Self, GatewayError> {
        Self::decode_cursor(raw).map_err(|_| GatewayError::bad_input("`after` is not a valid cursor"))
    }
}

impl CursorType for MovieCursor {
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

/// What to ask the cinema service for, given `first` and `after`.
#[derive(Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub page_token: String,
    pub page_size: i32,
    skip: u32,
}

impl PageRequest {
    pub fn new(first: Option<i32>, after: Option<&str>) -> Result<Self, GatewayError> {
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(GatewayError::bad_input(format!("`first` must be between 1 and {MAX_PAGE}")));
        }
        let start = after.map(MovieCursor::parse).transpose()?.unwrap_or_default();
        // skip <= MAX_SKIP, so the sum always fits.
        let page_size = first + start.skip as i32;
        Ok(Self { page_token: start.page_token, page_size, skip: start.skip })
    }

    /// Pairs each movie of the fetched page (past the skipped ones) with its cursor.
    pub fn edges<T>(&self, fetched: Vec<T>, next_page_token: &str) -> Vec<(MovieCursor, T)> {
        let kept: Vec<T> = fetched.into_iter().skip(self.skip as usize).collect();
        let count = kept.len();
        kept.into_iter()
            .enumerate()
            .map(|(i, item)| {
                let cursor = if i + 1 == count && !next_page_token.is_empty() {
                    MovieCursor { page_token: next_page_token.to_owned(), skip: 0 }
                } else {
                    let skip = self.skip.saturating_add(u32::try_from(i + 1).unwrap_or(u32::MAX));
                    MovieCursor { page_token: self.page_token.clone(), skip }
                };
                (cursor, item)
            })
            .collect()
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
        let edges = request.edges(vec!["a", "b", "c"], "tok2");
        let cursors: Vec<String> = edges.iter().map(|(c, _)| c.encode_cursor()).collect();
        assert_eq!(cursors, vec!["1.", "2.", "0.tok2"]);

        // Resuming after "b" re-reads this page and skips the first two movies.
        let resumed = PageRequest::new(Some(3), Some("2.")).unwrap();
        assert_eq!((resumed.page_token.as_str(), resumed.page_size), ("", 5));
        let edges = resumed.edges(vec!["a", "b", "c", "d", "e"], "tok3");
        assert_eq!(edges.iter().map(|(_, m)| *m).collect::<Vec<_>>(), vec!["c", "d", "e"]);
        assert_eq!(edges[2].0.encode_cursor(), "0.tok3");
    }

    #[test]
    fn the_final_page_keeps_positional_cursors() {
        let request = PageRequest::new(Some(5), Some("0.tok9")).unwrap();
        let edges = request.edges(vec!["y", "z"], "");
        assert_eq!(edges[1].0.encode_cursor(), "2.tok9");
    }

    #[test]
    fn rejects_bad_sizes_and_cursors() {
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(Some(MAX_PAGE + 1), None).is_err());
        assert!(PageRequest::new(Some(-1), None).is_err());
        assert!(PageRequest::new(None, Some("garbage")).is_err());
        assert!(PageRequest::new(None, Some("99999.tok")).is_err());
    }
}
