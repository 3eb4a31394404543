//! API errors: every failure a client sees is a `meta/v1 Status` with the
//! HTTP code, `reason` and `details` that Kubernetes clients key on.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

use crate::registry::Kind;
use crate::storage::StorageError;

/// A field-level validation failure (`details.causes[]` of a 422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        let field = field.into();
        let message = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        Cause { reason: "FieldValueRequired", field, message }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }
}

/// What went wrong, as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{} \"{name}\" not found", qualified(.plural, .group))]
    NotFound { group: String, plural: String, name: String },
    #[error("{} \"{name}\" already exists", qualified(.plural, .group))]
    AlreadyExists { group: String, plural: String, name: String },
    #[error("Operation cannot be fulfilled on {} \"{name}\": {message}", qualified(.plural, .group))]
    Conflict { group: String, plural: String, name: String, message: String },
    #[error("{} \"{name}\" is invalid: {}", qualified(.kind, .group), summary(.causes))]
    Invalid { group: String, kind: String, name: String, causes: Vec<Cause> },
    /// 403 of a request the authorizer refused (details name the resource).
    #[error("{message}")]
    Denied { group: String, plural: String, name: String, message: String },
    /// 409 of a server-side apply that would change fields other managers own.
    #[error("{message}")]
    FieldConflicts { message: String, causes: Vec<Cause> },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Unauthorized(String),
    /// 410: the requested resourceVersion is no longer available.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Timeout(String),
}

/// `deployments.apps`, or `pods` for the core group.
fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") }
}

fn summary(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    if parts.len() == 1 { parts.concat() } else { format!("[{}]", parts.join(", ")) }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn not_found(kind: &Kind, name: &str) -> ApiError {
        ApiError::NotFound {
            group: kind.group.into(),
            plural: kind.plural.into(),
            name: name.into(),
        }
    }

    pub fn already_exists(kind: &Kind, name: &str) -> ApiError {
        ApiError::AlreadyExists {
            group: kind.group.into(),
            plural: kind.plural.into(),
            name: name.into(),
        }
    }

    pub fn conflict(kind: &Kind, name: &str, message: impl Into<String>) -> ApiError {
        ApiError::Conflict {
            group: kind.group.into(),
            plural: kind.plural.into(),
            name: name.into(),
            message: message.into(),
        }
    }

    /// The 409 for a stale resourceVersion.
    pub fn stale(kind: &Kind, name: &str) -> ApiError {
        ApiError::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(kind: &Kind, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::Invalid {
            group: kind.group.into(),
            kind: kind.kind.into(),
            name: name.into(),
            causes,
        }
    }

    /// Maps a storage failure on `name` of `kind`.
    pub fn storage(kind: &Kind, name: &str, err: StorageError) -> ApiError {
        match err {
            StorageError::NotFound(_) => ApiError::not_found(kind, name),
            StorageError::AlreadyExists(_) => ApiError::already_exists(kind, name),
            StorageError::Conflict { .. } => ApiError::stale(kind, name),
            StorageError::MissingParent(key) => {
                let ns = key.rsplit('/').next().unwrap_or_default().to_owned();
                ApiError::NotFound { group: String::new(), plural: "namespaces".into(), name: ns }
            }
            StorageError::Compacted(_) => ApiError::Gone("too old resource version".into()),
            StorageError::Backend(e) => ApiError::Internal(format!("storage: {e}")),
        }
    }

    /// 410 for a watch or list from `asked`, older than what is kept; `current` is the
    /// newest revision, as Kubernetes says it.
    pub fn gone_at(asked: i64, current: i64) -> ApiError {
        ApiError::Gone(format!("too old resource version: {asked} ({current})"))
    }

    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::FieldConflicts { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) | ApiError::Denied { .. } => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::FieldConflicts { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) | ApiError::Denied { .. } => "Forbidden",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Gone(_) => "Expired",
            ApiError::Internal(_) => "InternalError",
            ApiError::Timeout(_) => "Timeout",
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        let details = match self {
            ApiError::NotFound { group, plural, name }
            | ApiError::AlreadyExists { group, plural, name }
            | ApiError::Conflict { group, plural, name, .. } => {
                Some(json!({ "name": name, "group": group, "kind": plural }))
            }
            ApiError::Invalid { group, kind, name, causes } => Some(json!({
                "name": name,
                "group": group,
                "kind": kind,
                "causes": causes_json(causes),
            })),
            ApiError::FieldConflicts { causes, .. } => {
                Some(json!({ "causes": causes_json(causes) }))
            }
            ApiError::Denied { group, plural, name, .. } if !plural.is_empty() => {
                let mut d = json!({ "group": group, "kind": plural });
                if !name.is_empty() {
                    d["name"] = json!(name);
                }
                Some(d)
            }
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

fn causes_json(causes: &[Cause]) -> Vec<Value> {
    causes
        .iter()
        .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
        .collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code().is_server_error() {
            tracing::warn!("{self}");
        }
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        (self.code(), [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
