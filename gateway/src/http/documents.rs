//! Parsed GraphQL documents, kept by query text. Apps send the same few queries
//! over and over with different variables; parsing one (async-graphql's pest
//! parser) costs ~40 times what copying its parsed form does, so each distinct text
//! is parsed once and each request gets a copy. A request's document is also parsed
//! only once: the gateway's own checks (mutation over GET, introspection) read the
//! copy the executor then runs.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_graphql::parser::types::ExecutableDocument;

/// Distinct query texts kept; when full the cache starts over, so memory stays
/// bounded however many distinct texts arrive (the ones in use return at once).
const CAPACITY: usize = 512;
/// Longer texts are parsed every time rather than kept.
const MAX_QUERY_BYTES: usize = 8 * 1024;

#[derive(Default)]
pub(super) struct Documents {
    parsed: Mutex<HashMap<String, ExecutableDocument>>,
}

impl Documents {
    /// The request's parsed document, attached to it so the executor does not parse
    /// it again; `None` when it does not parse (the executor then reports why).
    pub(super) fn attach<'r>(
        &self,
        request: &'r mut async_graphql::Request,
    ) -> Option<&'r ExecutableDocument> {
        let query = request.query.as_str();
        if query.len() > MAX_QUERY_BYTES {
            return request.parsed_query().ok();
        }
        let known = self.lock().get(query).cloned();
        match known {
            Some(document) => request.set_parsed_query(document),
            None => {
                let document = request.parsed_query().ok()?.clone();
                let mut parsed = self.lock();
                if parsed.len() >= CAPACITY {
                    parsed.clear();
                }
                parsed.insert(request.query.clone(), document);
            }
        }
        request.parsed_query().ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecutableDocument>> {
        self.parsed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::types::OperationType;

    use super::*;

    fn operation_type(document: &ExecutableDocument) -> OperationType {
        let (_, operation) = document.operations.iter().next().expect("an operation");
        operation.node.ty
    }

    #[test]
    fn a_query_text_is_parsed_once_and_each_request_gets_its_document() {
        let documents = Documents::default();
        let mut first = async_graphql::Request::new("mutation { login { token } }");
        assert_eq!(documents.attach(&mut first).map(operation_type), Some(OperationType::Mutation));
        let mut again = async_graphql::Request::new("mutation { login { token } }");
        assert_eq!(documents.attach(&mut again).map(operation_type), Some(OperationType::Mutation));
        let mut other = async_graphql::Request::new("{ me { id } }");
        assert_eq!(documents.attach(&mut other).map(operation_type), Some(OperationType::Query));
        assert_eq!(documents.kept(), 2);
    }

    #[test]
    fn what_does_not_parse_is_left_to_the_executor_and_not_kept() {
        let documents = Documents::default();
        assert!(documents.attach(&mut async_graphql::Request::new("not graphql")).is_none());
        assert_eq!(documents.kept(), 0);
    }

    #[test]
    fn the_cache_stays_bounded_and_long_texts_are_not_kept() {
        let documents = Documents::default();
        for n in 0..CAPACITY + 10 {
            let mut request = async_graphql::Request::new(format!("{{ f{n} }}"));
            assert!(documents.attach(&mut request).is_some());
        }
        assert!(documents.kept() <= CAPACITY, "{}", documents.kept());
        let long = format!("{{ me {{ id }} }}{}", " ".repeat(MAX_QUERY_BYTES));
        let before = documents.kept();
        assert!(documents.attach(&mut async_graphql::Request::new(long)).is_some());
        assert_eq!(documents.kept(), before);
    }
}
