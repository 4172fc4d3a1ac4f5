//! What one GraphQL operation may cost and how its errors are labelled: depth and complexity are
//! checked after validation (`too_complex`), the events one answer carries are bounded in bytes
//! (`--graphql-max-response`; a page is cut with `more: true`, and an alias with nothing left gets
//! `response_too_large`), and every error leaves with a reason code in `extensions.code`.

use std::sync::{Arc, Mutex};

use async_graphql::{
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation},
    Response, ServerError, ValidationResult,
};

use crate::{event::SharedEvent, metrics::RejectReason};

/// Deepest selection accepted. The deepest useful query is three levels (`events { events { seq } }`),
/// so this leaves room for introspection of a type without allowing runaway nesting.
pub const MAX_DEPTH: usize = 8;
/// Complexity budget (one per field, aliases included): bounds how many fields, and so how many
/// aliased `events` reads, one operation can ask for.
pub const MAX_COMPLEXITY: usize = 500;

/// The schema extension that refuses over-deep and over-complex operations with `too_complex`.
pub struct CostLimits;

impl ExtensionFactory for CostLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CostLimits)
    }
}

#[async_trait::async_trait]
impl Extension for CostLimits {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let refusal = if result.depth > MAX_DEPTH {
            format!(
                "the query is nested {} levels deep; the limit is {MAX_DEPTH}",
                result.depth
            )
        } else if result.complexity > MAX_COMPLEXITY {
            format!(
                "the query asks for {} fields (aliases included); the limit is {MAX_COMPLEXITY}",
                result.complexity
            )
        } else {
            return Ok(result);
        };
        let mut error = ServerError::new(refusal, None);
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", RejectReason::TooComplex.label());
        Err(vec![error])
    }
}

/// The reason code of an error, if it has one.
pub fn code(error: &ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code),
        _ => None,
    }
}

/// Gives every error without a code `bad_query`: what async-graphql reports itself — syntax,
/// unknown fields and arguments, values of the wrong type — is a malformed query.
pub fn label_errors(response: &mut Response) {
    for error in &mut response.errors {
        if code(error).is_none() {
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", RejectReason::BadQuery.label());
        }
    }
}

/// The bytes of event data one answer may still carry, shared by all its fields (in the request's
/// data). The first event of an answer always fits, so no event is too large to be read at all.
pub struct ResponseBudget {
    left: Mutex<Option<usize>>,
    limit: usize,
}

impl ResponseBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            left: Mutex::new(None),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many of `events`, from the first, still fit (their event JSON is the measure); they are
    /// charged.
    pub fn take(&self, events: &[SharedEvent]) -> usize {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = 0;
        for event in events {
            let size = event.json.len();
            match *left {
                None => *left = Some(self.limit.saturating_sub(size)),
                Some(room) if size <= room => *left = Some(room - size),
                Some(_) => break,
            }
            kept += 1;
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{event::Event, topic::TopicName};

    fn events(sizes: &[usize]) -> Vec<SharedEvent> {
        let topic = TopicName::parse("t").unwrap_or_else(|_| unreachable!());
        sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                Event::new(topic.clone(), i as u64 + 1, Bytes::from(vec![b'x'; *size]))
            })
            .collect()
    }

    #[test]
    fn the_budget_cuts_pages_and_always_admits_a_first_event() {
        let page = events(&[100, 100, 100]);
        let one = page[0].json.len();
        let budget = ResponseBudget::new(one * 2 + 1);
        assert_eq!(budget.take(&page), 2);
        assert_eq!(budget.take(&page), 0);

        let big = events(&[10_000]);
        let budget = ResponseBudget::new(100);
        assert_eq!(budget.take(&big), 1, "a first event larger than the budget");
        assert_eq!(budget.take(&big), 0);
    }
}
