//! `/openapi/v2`. kubectl 1.20 asks for the gnostic protobuf encoding and
//! validates `create`/`apply` input against the definitions it finds;
//! kinds without a definition are not validated client-side (the server
//! validates them anyway). We answer protobuf requests with an empty
//! document (a valid, empty `openapi_v2.Document`) and JSON requests with
//! a skeleton swagger document.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::json;

use crate::server::VERSION;

pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

pub async fn serve(headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("protobuf") {
        // kube-openapi answers protobuf as octet-stream (Go cannot parse the `@`).
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], Vec::new())
            .into_response();
    }
    let (major, minor) = VERSION;
    let doc = json!({
        "swagger": "2.0",
        "info": { "title": "km apiserver", "version": format!("v{major}.{minor}.0-km") },
        "paths": {},
        "definitions": {},
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
        .into_response()
}
