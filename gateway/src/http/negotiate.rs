//! `Accept` header negotiation for the GraphQL-over-HTTP media types.

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
pub const JSON: &str = "application/json";
const HTML: &str = "text/html";

/// The media type a GraphQL response is sent as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMedia {
    /// Legacy clients: every well-formed request gets 200.
    Json,
    /// GraphQL-over-HTTP: request errors get 4xx.
    GraphqlResponseJson,
}

impl ResponseMedia {
    /// `application/graphql-response+json` only when the client names it explicitly
    /// and likes it at least as much as `application/json`; everything else
    /// (no header, `*/*`) keeps the answer every client understands.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let accept = accept.unwrap_or_default();
        let explicit =
            ranges(accept).filter(|r| r.media == GRAPHQL_RESPONSE_JSON).map(|r| r.q).reduce(f32::max);
        match explicit {
            Some(q) if q > 0.0 && q >= quality(accept, JSON) => Self::GraphqlResponseJson,
            _ => Self::Json,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => JSON,
            Self::GraphqlResponseJson => GRAPHQL_RESPONSE_JSON,
        }
    }
}

/// True when a browser asks for a page rather than for data.
pub fn prefers_html(accept: Option<&str>) -> bool {
    let accept = accept.unwrap_or_default();
    let html = quality(accept, HTML);
    html > 0.0 && html > quality(accept, JSON) && html > quality(accept, GRAPHQL_RESPONSE_JSON)
}

struct Range<'a> {
    media: &'a str,
    q: f32,
}

fn ranges(accept: &str) -> impl Iterator<Item = Range<'_>> {
    accept.split(',').filter_map(|item| {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().filter(|m| !m.is_empty())?;
        let q = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|v| v.parse::<f32>().ok())
            .unwrap_or(1.0);
        Some(Range { media, q })
    })
}

/// The q-value `accept` gives `media`: the most specific matching range wins
/// (RFC 9110 §12.5.1); 0 when nothing matches.
fn quality(accept: &str, media: &str) -> f32 {
    let kind = media.split('/').next().unwrap_or_default();
    let mut best: Option<(u8, f32)> = None;
    for range in ranges(accept) {
        let specificity = if range.media.eq_ignore_ascii_case(media) {
            3
        } else if range.media.strip_suffix("/*").is_some_and(|k| k.eq_ignore_ascii_case(kind)) {
            2
        } else if range.media == "*/*" {
            1
        } else {
            continue;
        };
        match best {
            Some((s, q)) if s > specificity || (s == specificity && q >= range.q) => {}
            _ => best = Some((specificity, range.q)),
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    #[test]
    fn graphql_response_json_only_when_asked_for() {
        use ResponseMedia::*;
        assert_eq!(ResponseMedia::negotiate(None), Json);
        assert_eq!(ResponseMedia::negotiate(Some("*/*")), Json);
        assert_eq!(ResponseMedia::negotiate(Some("application/json")), Json);
        assert_eq!(ResponseMedia::negotiate(Some(GRAPHQL_RESPONSE_JSON)), GraphqlResponseJson);
        assert_eq!(
            ResponseMedia::negotiate(Some("application/graphql-response+json, application/json;q=0.9")),
            GraphqlResponseJson
        );
        assert_eq!(
            ResponseMedia::negotiate(Some("application/graphql-response+json;q=0.5, application/json")),
            Json
        );
        assert_eq!(ResponseMedia::negotiate(Some("application/graphql-response+json;q=0")), Json);
    }

    #[test]
    fn browsers_get_html_and_api_clients_do_not() {
        assert!(prefers_html(Some(BROWSER)));
        assert!(!prefers_html(None));
        assert!(!prefers_html(Some("*/*")));
        assert!(!prefers_html(Some("application/json")));
        assert!(!prefers_html(Some("text/html;q=0.5, application/json")));
    }

    #[test]
    fn the_most_specific_range_decides() {
        assert_eq!(quality("text/*;q=0.3, text/html;q=0.7, */*;q=0.1", "text/html"), 0.7);
        assert_eq!(quality("text/*;q=0.3, */*;q=0.1", "text/plain"), 0.3);
        assert_eq!(quality("application/json", "text/html"), 0.0);
    }
}
