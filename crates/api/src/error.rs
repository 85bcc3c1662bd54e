//! API errors: every failure is a status and a JSON `{"error": "..."}` a person can act on.
//!
//! Internal failures (database, storage) never put their own text in the response: it can name
//! tables, paths or hosts. The log gets the detail under the request's id, and the response
//! carries the same id (`x-request-id` and `request_id`) so an operator can find it.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Timeout(String),
    /// The caller (or everybody) is over a limit; try again after the given time.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Duration,
    },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    #[error("database: {0}")]
    Db(#[from] oxcast_db::Error),
    #[error("storage: {0}")]
    Store(#[from] oxcast_store::Error),
    /// A failure already described (for example one shared by requests that waited on it).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Db(_) | ApiError::Store(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn is_internal(&self) -> bool {
        matches!(
            self,
            ApiError::Db(_) | ApiError::Store(_) | ApiError::Internal(_)
        )
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, when inside [`request_id`]'s scope.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Gives every request an id: in its tracing span, in task-local scope for error bodies, and in
/// the `x-request-id` response header.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("request", id = %id);
    let mut resp = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next.run(req), span),
        )
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = current_request_id();
        let message = if self.is_internal() {
            tracing::error!(error = %self, request_id = request_id.as_deref(), "request failed");
            match &request_id {
                Some(id) => {
                    format!("internal error; the server log has the details under request id {id}")
                }
                None => "internal error; the server log has the details".to_string(),
            }
        } else {
            // Caused by the client or by load: not the operator's problem.
            tracing::debug!(error = %self, %status, "request refused");
            self.to_string()
        };
        let mut body = serde_json::json!({ "error": message });
        if let Some(id) = &request_id {
            body["request_id"] = id.clone().into();
        }
        let mut resp = (status, Json(body)).into_response();
        match &self {
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(v) = format!("bytes */{size}").parse() {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::TooManyRequests { retry_after, .. }
            | ApiError::Unavailable { retry_after, .. } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_hide_their_text_and_name_the_request() {
        let err = ApiError::Store(oxcast_store::Error::Io {
            path: "/srv/secret/objects/x".into(),
            source: std::io::Error::other("disk on fire"),
        });
        let resp = REQUEST_ID
            .scope("abc123".into(), async move { err.into_response() })
            .await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("secret") && !text.contains("fire"), "{text}");
        assert!(text.contains("abc123"), "{text}");
    }

    #[tokio::test]
    async fn limits_say_when_to_come_back() {
        let resp = ApiError::TooManyRequests {
            message: "slow down".into(),
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    }
}
