//! Hostile GraphQL over HTTP: a small query that asks for the same large page under many aliases
//! must not cost the server more than a few MB (measured as the RSS of a server in a child process),
//! and a legitimate large page is cut with `more: true` rather than refused.

#![allow(clippy::unwrap_used)]

mod common;

use common::{child::ChildServer, client, post, within, STEP};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// What the whole attack below may add to the server's peak RSS: six answers under the 1 MiB
/// default budget, with their encodings, and the allocator's slack.
const RSS_BOUND: u64 = 48 * MIB;

/// 166 aliases of the same page: complexity 498, just under the limit of 500.
fn amplifying_query() -> String {
    let aliases: String = (0..166)
        .map(|i| format!("a{i}: events(topic: \"big\") {{ events {{ data }} }} "))
        .collect();
    format!("{{ {aliases} }}")
}

async fn graphql(http: &reqwest::Client, base: &str, query: &str) -> (usize, Value) {
    let body = json!({ "query": query }).to_string();
    let reply = post(http, &format!("{base}/graphql"), body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    (reply.body.len(), reply.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_aliases_of_a_large_page_cost_a_bounded_answer_and_bounded_memory() {
    let server = ChildServer::start(&[]).await;
    let http = client();
    let base = server.url();
    // 30 events of 40 KiB: a 1.2 MB page, well inside the default history (4 MiB, 1024 events).
    let payload = "x".repeat(40 << 10);
    for _ in 0..30 {
        let reply = post(&http, &format!("{base}/publish/big"), payload.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let baseline = server.status_bytes("VmRSS");

    let query = amplifying_query();
    let (size, answer) = graphql(&http, &base, &query).await;
    let errors = answer["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "the budget was never reached");
    assert!(
        errors
            .iter()
            .all(|e| e["extensions"]["code"] == "response_too_large"),
        "{:?}",
        &errors[..1]
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("--graphql-max-response"),
        "{}",
        errors[0]
    );
    // Unbounded, this answer is 166 × 1.2 MB ≈ 200 MB.
    assert!(size < 2 * MIB as usize, "a {size}-byte answer");

    // Six at once, as in the report that found it.
    let attacks: Vec<_> = (0..6)
        .map(|_| {
            let (http, base, query) = (http.clone(), base.clone(), query.clone());
            tokio::spawn(async move { graphql(&http, &base, &query).await.0 })
        })
        .collect();
    for attack in attacks {
        let size = within("an amplified query", STEP, attack).await.unwrap();
        assert!(size < 2 * MIB as usize, "a {size}-byte answer");
    }
    let peak = server.status_bytes("VmHWM");
    eprintln!(
        "server RSS before the attack {} KiB, peak {} KiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        peak < baseline + RSS_BOUND,
        "peak RSS {peak} from {baseline} before the attack"
    );

    // A single page larger than the budget is cut, not refused: the client reads on.
    let page = "{ events(topic: \"big\", limit: 30) { more events { seq } } }";
    let (_, answer) = graphql(&http, &base, page).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    let events = answer["data"]["events"]["events"].as_array().unwrap();
    assert!(events.len() < 30 && !events.is_empty(), "{}", events.len());
    assert_eq!(answer["data"]["events"]["more"], true);
    server.kill().await;
}
