//! GraphQL over the shared feed: `POST /graphql` (queries and mutations) and `GET /graphql/ws`
//! (subscriptions over the `graphql-transport-ws` protocol); the schema lives in `schema.rs`.

mod direct;
mod limits;
mod schema;
mod slots;
mod socket;
mod transport_ws;

use std::sync::Arc;

use async_graphql::{Data, Executor, Request, Response};
use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response as HttpResponse},
    routing::{get, post},
    Extension, Router,
};
use futures_util::{stream::BoxStream, StreamExt};
use tokio::sync::Semaphore;

use crate::{
    app::AppState,
    error::AppError,
    extract::{json_object, Body},
    metrics::{Metrics, PatternKind, RejectReason},
};

pub use limits::{MAX_COMPLEXITY, MAX_DEPTH};
pub use schema::{FeedSchema, LAGGED};

pub fn routes(state: &AppState) -> Router<AppState> {
    let executor = Counted {
        schema: schema::build(state.clone()),
        metrics: state.metrics.clone(),
        response_budget: state.config.graphql_max_response,
        queries: Arc::new(Semaphore::new(state.config.graphql_concurrency)),
    };
    Router::new()
        .route("/graphql", post(query))
        .route("/graphql/ws", get(socket::upgrade))
        .layer(Extension(executor))
}

/// The schema in SDL, for documentation and tests.
pub fn sdl() -> String {
    schema::sdl()
}

/// The schema behind a counter: every answer's errors get their reason code and every answer
/// carrying errors counts as one rejection, whichever transport it went out on, so the resolvers only
/// build errors and never count them. Each operation gets its own response budget.
#[derive(Clone)]
struct Counted {
    schema: FeedSchema,
    metrics: Arc<Metrics>,
    /// `--graphql-max-response`.
    response_budget: usize,
    /// Queries and mutations over HTTP executed (and encoded) at once: `--graphql-concurrency`.
    queries: Arc<Semaphore>,
}

impl Counted {
    fn finish(metrics: &Metrics, response: &mut Response) {
        limits::label_errors(response);
        let Some(code) = response.errors.first().and_then(limits::code) else {
            return;
        };
        // A lag is counted as a lagged disconnect where it happens, not as a refusal.
        if code == LAGGED {
            return;
        }
        let reason = RejectReason::ALL
            .into_iter()
            .find(|reason| reason.label() == code)
            .unwrap_or(RejectReason::BadQuery);
        metrics.rejected(reason);
    }

    fn budgeted(&self, request: Request) -> Request {
        request.data(limits::ResponseBudget::new(self.response_budget))
    }
}

impl Executor for Counted {
    async fn execute(&self, request: Request) -> Response {
        let mut response = self.schema.execute(self.budgeted(request)).await;
        Self::finish(&self.metrics, &mut response);
        response
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let metrics = self.metrics.clone();
        self.schema
            .execute_stream_with_session_data(
                self.budgeted(request),
                session_data.unwrap_or_default(),
            )
            .map(move |mut response| {
                Self::finish(&metrics, &mut response);
                response
            })
            .boxed()
    }
}

/// `POST /graphql`: one GraphQL request as JSON (`{query, variables, operationName}`). The body is
/// read through the server's bounded extractor, so --max-body applies (413 beyond it); a body that is
/// not a GraphQL request gets the usual 400 JSON error, and GraphQL errors come back as a 200 answer
/// with `errors`, as async-graphql answers them.
async fn query(
    State(state): State<AppState>,
    Extension(executor): Extension<Counted>,
    Body(body): Body,
) -> Result<HttpResponse, AppError> {
    state.metrics.request(PatternKind::GraphQl);
    let request: Request = json_object(&body).map_err(|e| {
        AppError::BadBody(format!(
            "the body is not a GraphQL request ({{\"query\": …, \"variables\": …}}): {e}"
        ))
    })?;
    // Executing and encoding hold the answer in memory: only so many at once.
    let _permit = executor.queries.acquire().await.ok();
    let response = executor.execute(request).await;
    // A response is plain JSON values and strings; encoding it cannot fail in practice.
    let json = serde_json::to_vec(&response).unwrap_or_else(|e| {
        tracing::error!(%e, "encoding a GraphQL answer failed");
        br#"{"errors":[{"message":"the answer could not be encoded"}]}"#.to_vec()
    });
    Ok((
        [(header::CONTENT_TYPE, "application/graphql-response+json")],
        json,
    )
        .into_response())
}
