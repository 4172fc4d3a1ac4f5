//! A minimal HTTP/1.1 client connection on a counted socket: hyper's connection API directly, so every
//! byte on the wire is counted and each simulated client owns exactly one TCP connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;

use crate::{
    net::{connect, counted},
    record::Recorder,
    target::Target,
};

/// Largest response body a client buffers; a larger one is an error, not a memory blow-up.
pub const MAX_BODY: usize = 64 << 20;

/// Why a client's request failed; `kind()` is the label errors are counted under.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("request failed: {0}")]
    Request(hyper::Error),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("response body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("unexpected answer: {0}")]
    Protocol(String),
    #[error("WebSocket: {0}")]
    WebSocket(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection closed mid-answer")]
    Closed,
    #[error("socket error: {0}")]
    Io(std::io::Error),
}

impl ClientError {
    pub fn kind(&self) -> String {
        match self {
            ClientError::Connect(e) => match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connect_refused".into(),
                std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse => {
                    "connect_no_port".into()
                }
                std::io::ErrorKind::TimedOut => "connect_timeout".into(),
                _ => "connect_error".into(),
            },
            ClientError::Handshake(_) => "handshake_error".into(),
            ClientError::Request(e) if e.is_closed() || e.is_incomplete_message() => {
                "connection_closed".into()
            }
            ClientError::Request(_) => "request_error".into(),
            ClientError::Status(code) => format!("http_{}", code.as_u16()),
            ClientError::BodyTooLarge => "body_too_large".into(),
            ClientError::Protocol(_) => "protocol_error".into(),
            ClientError::WebSocket(_) => "websocket_error".into(),
            ClientError::Timeout(_) => "timeout".into(),
            ClientError::Closed => "connection_closed".into(),
            ClientError::Io(_) => "request_error".into(),
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    sender: http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl HttpConn {
    /// Connects (from `source` when given), counts the connection and performs the HTTP handshake.
    pub async fn open(
        target: &Target,
        source: Option<SocketAddr>,
        recorder: &Arc<Recorder>,
    ) -> Result<Self, ClientError> {
        let stream = connect(target.addr, source)
            .await
            .map_err(ClientError::Connect)?;
        let io = TokioIo::new(counted(stream, recorder));
        let (sender, connection) = http1::handshake(io).await.map_err(ClientError::Handshake)?;
        tokio::spawn(async move {
            // Ends when the server closes or the sender is dropped; errors surface on requests.
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            authority: target.authority.clone(),
        })
    }

    /// Sends a request and returns the status and the response head; the body is left to the caller.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(impl AsRef<str>, impl AsRef<str>)],
        body: Bytes,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        for (name, value) in headers {
            request = request.header(name.as_ref(), value.as_ref());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.sender.ready().await.map_err(ClientError::Request)?;
        self.sender
            .send_request(request)
            .await
            .map_err(ClientError::Request)
    }

    /// Sends a request and reads the whole (bounded) body; non-2xx statuses are errors.
    pub async fn fetch(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        self.fetch_with(method, path, &[] as &[(&str, &str)], body)
            .await
    }

    /// [`fetch`](Self::fetch) with extra request headers (e.g. a JSON body's content type).
    pub async fn fetch_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(impl AsRef<str>, impl AsRef<str>)],
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        self.exchange(method, path, headers, body)
            .await
            .map(|(_, body)| body)
    }

    /// [`fetch_with`](Self::fetch_with), keeping the response headers (a cursor may be there).
    pub async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(impl AsRef<str>, impl AsRef<str>)],
        body: Bytes,
    ) -> Result<(http::HeaderMap, Bytes), ClientError> {
        let response = self.send(method, path, headers, body).await?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let body = read_body(body).await?;
        if !status.is_success() {
            return Err(ClientError::Status(status));
        }
        Ok((parts.headers, body))
    }
}

/// Reads a body to the end, refusing more than [`MAX_BODY`] bytes.
pub async fn read_body(body: Incoming) -> Result<Bytes, ClientError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ClientError::BodyTooLarge)
        }
        Err(error) => match error.downcast::<hyper::Error>() {
            Ok(e) => Err(ClientError::Request(*e)),
            Err(other) => Err(ClientError::Protocol(other.to_string())),
        },
    }
}
