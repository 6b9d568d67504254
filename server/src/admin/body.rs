//! Request bodies on the admin port ([`read_whole`]): each is read whole before its handler
//! runs, at most [`MAX_BODY_BYTES`] within [`BODY_READ_TIMEOUT`], so that a client sending a
//! body slowly, or without end, keeps neither a connection slot nor memory for longer than that.
//! Every admin request that has a body takes a small JSON document (a membership change, a
//! tenant of at most 64 identities).

use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;

use super::membership::ApiError;

/// The largest request body the admin port reads. A tenant's declaration of 64 identities
/// (the most a tenant may have) takes a few KiB; 256 open connections each holding this much
/// take 16 MiB.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// How long a client may take to send a request's body once its head has arrived.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a body was not read.
enum Unread {
    /// Longer than [`MAX_BODY_BYTES`]: by its `Content-Length`, or once more than that had come.
    TooLarge,
    /// Not complete within [`BODY_READ_TIMEOUT`].
    TooSlow,
    /// The connection failed while the body was read (the client is most likely gone).
    Broken(axum::Error),
}

/// Middleware: reads the request's body whole, then hands the handler the request with the
/// bytes read; a body that is too large or too slow is answered `413` or `408` and the
/// connection closed (the rest of the body is never read, so the connection cannot carry
/// another request; a client that has sent more than was read may see the connection reset
/// before it reads the answer). A request without a body passes as it is.
pub async fn read_whole(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        Err(Unread::TooLarge)
    } else {
        // hyper ends a body at its declared length: a buffer of that size never grows.
        let capacity = declared.map_or(MAX_BODY_BYTES, |len| len as usize);
        tokio::time::timeout(BODY_READ_TIMEOUT, collect(body, capacity))
            .await
            .unwrap_or(Err(Unread::TooSlow))
    };
    match read {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes.freeze())))
                .await
        }
        Err(why) => refuse(why, &parts),
    }
}

/// The answer to a request whose body was not read: the connection closes after it.
fn refuse(why: Unread, req: &axum::http::request::Parts) -> Response {
    let refusal = match why {
        Unread::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies on the admin port are at most {MAX_BODY_BYTES} bytes"),
        ),
        Unread::TooSlow => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
        ),
        Unread::Broken(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        ),
    };
    tracing::debug!(
        method = %req.method,
        path = %req.uri.path(),
        status = %refusal.status(),
        "admin request body refused"
    );
    let mut response = refusal.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The body's bytes, if they come to at most [`MAX_BODY_BYTES`], in a buffer of `capacity`
/// (at most that too) to begin with.
async fn collect(body: Body, capacity: usize) -> Result<BytesMut, Unread> {
    let mut chunks = body.into_data_stream();
    let mut bytes = BytesMut::with_capacity(capacity.min(MAX_BODY_BYTES));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(Unread::Broken)?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Unread::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
