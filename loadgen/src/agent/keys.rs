//! The Redis keys a coordinator and its agents meet at, and the connection both open.

use std::time::Duration;

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig};

/// How long connecting, and any one command, may take (a blocking pop waits at most
/// [`POLL`], well within it).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long one blocking pop waits before the loop looks around.
pub const POLL: Duration = Duration::from_secs(1);
/// Lists and the session key expire after this, so an abandoned run leaves nothing behind.
pub const KEEP_S: u64 = 3_600;
/// The session key lives this long without a refresh: a coordinator gone this long is gone.
pub const SESSION_TTL_S: u64 = 15;

/// The keys of one named run.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(name: &str) -> Self {
        Self {
            prefix: format!("cb:agents:{name}"),
        }
    }

    /// Holds the coordinator's session id while it runs.
    pub fn session(&self) -> String {
        format!("{}:session", self.prefix)
    }

    /// Agents introduce themselves here.
    pub fn hello(&self, session: &str) -> String {
        format!("{}:{session}:hello", self.prefix)
    }

    /// Every agent's reports, tagged with its shard.
    pub fn up(&self, session: &str) -> String {
        format!("{}:{session}:up", self.prefix)
    }

    /// Commands for one agent process.
    pub fn down(&self, session: &str, shard: usize, nonce: &str) -> String {
        format!("{}:{session}:down:{shard}:{nonce}", self.prefix)
    }
}

/// One report as it travels up.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Tagged<T> {
    pub shard: usize,
    pub nonce: String,
    pub message: T,
}

/// Opens a connection whose commands may block for [`POLL`]; the error names the URL.
pub async fn connect(url: &str) -> Result<MultiplexedConnection, super::AgentError> {
    connect_now(url)
        .await
        .map_err(|detail| super::AgentError::Unreachable {
            url: url.to_owned(),
            detail,
        })
}

async fn connect_now(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let connect = client.get_multiplexed_async_connection_with_config(&config);
    match tokio::time::timeout(TIMEOUT, connect).await {
        Ok(Ok(mut connection)) => {
            let ping: Result<String, _> = redis::cmd("PING").query_async(&mut connection).await;
            ping.map(|_| connection).map_err(|e| e.to_string())
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
    }
}

/// Appends `message` to the list `key` (which then expires after [`KEEP_S`]).
pub async fn push(
    connection: &mut MultiplexedConnection,
    key: &str,
    message: &impl serde::Serialize,
) -> redis::RedisResult<()> {
    let text = serde_json::to_string(message).unwrap_or_default();
    redis::pipe()
        .cmd("RPUSH")
        .arg(key)
        .arg(text)
        .ignore()
        .cmd("EXPIRE")
        .arg(key)
        .arg(KEEP_S)
        .ignore()
        .query_async::<()>(connection)
        .await
}

/// Takes the next entry of `key`, waiting at most [`POLL`].
pub async fn pop(
    connection: &mut MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<Option<String>> {
    let popped: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(key)
        .arg(POLL.as_secs_f64())
        .query_async(connection)
        .await?;
    Ok(popped.map(|(_, value)| value))
}

/// A short random id.
pub fn nonce() -> String {
    format!("{:016x}", fastrand::u64(..))
}
