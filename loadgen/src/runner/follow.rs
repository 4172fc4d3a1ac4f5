//! Log brokers' topics followed before the ramp. On RabbitMQ and Kafka a topic's log is made by its
//! first publish, and an instance follows it only from the first request that needs it, once the
//! broker has let a new log settle (600 ms on RabbitMQ). Pollers ask nothing that makes a log, so
//! their first waits ran into the window and showed up as a stall of hundreds of milliseconds in
//! one run of a few. Subscribing once to each of the cell's topics on each instance makes the log
//! and starts the instance's follower before publishing starts, as streaming clients' own
//! subscriptions do, so the warm-up covers what it is for.

use std::{sync::Arc, time::Duration};

use crate::{http_stream::StreamResponse, record::Recorder, target::Target};

/// How long one subscription may take to be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Subscribes to every topic on every target (`GET /sse/{topic}`) and lets go once each is
/// answered. A failure is only reported: the cell still runs and says what it measured.
pub async fn follow_topics(targets: &[Arc<Target>], topics: &[String]) {
    // Its bytes are not the cell's.
    let recorder = Arc::new(Recorder::new(1));
    let subscriptions = targets.iter().flat_map(|target| {
        let recorder = recorder.clone();
        topics.iter().map(move |topic| {
            let recorder = recorder.clone();
            async move {
                let path = format!("{}sse/{topic}", target.path);
                let answered = tokio::time::timeout(
                    ANSWER_WITHIN,
                    StreamResponse::get(target, None, &recorder, &path, &[]),
                )
                .await;
                match answered {
                    Ok(Ok((status, _stream))) if status.is_success() => {}
                    Ok(Ok((status, _))) => {
                        tracing::warn!(%status, path, authority = target.authority, "a topic was not followed before the ramp");
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, path, authority = target.authority, "a topic was not followed before the ramp");
                    }
                    Err(_) => {
                        tracing::warn!(path, authority = target.authority, "a topic was not followed before the ramp: no answer within {ANSWER_WITHIN:?}");
                    }
                }
            }
        })
    });
    futures_util::future::join_all(subscriptions).await;
}

#[cfg(test)]
mod tests {
    use commbench_servers::{config::ServerConfig, metrics::PatternKind, ServerHandle};

    use super::*;

    #[tokio::test]
    async fn every_instance_is_subscribed_to_every_topic_once() {
        let mut servers = Vec::new();
        for _ in 0..2 {
            let config = ServerConfig {
                bind: "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
                ..ServerConfig::default()
            };
            servers.push(
                ServerHandle::spawn(config)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let mut targets = Vec::new();
        for server in &servers {
            let target = Target::external(&server.url()).await;
            targets.push(Arc::new(target.unwrap_or_else(|e| panic!("{e}"))));
        }
        let topics = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        follow_topics(&targets, &topics).await;
        for server in &servers {
            let rendered = server.state.metrics.render();
            let sse = format!(
                "commbench_requests_total{{pattern=\"{}\"}} 3",
                PatternKind::Sse.label()
            );
            assert!(rendered.contains(&sse), "{rendered}");
        }
    }
}
