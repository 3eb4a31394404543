//! The two encodings Mesos speaks on its HTTP APIs, and how a peer picks one.
//!
//! Mesos compares `Content-Type` byte for byte (a `; charset=…` parameter is
//! refused) and chooses the response encoding from `Accept`, preferring JSON.

use prost_reflect::ReflectMessage;

use crate::json::{self, JsonError};

/// `application/json`, Mesos's own JSON mapping (see [`crate::json`]).
pub const APPLICATION_JSON: &str = "application/json";
/// `application/x-protobuf`, binary protobuf.
pub const APPLICATION_PROTOBUF: &str = "application/x-protobuf";

/// An encoding of Mesos messages on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// Mesos JSON.
    Json,
    /// Binary protobuf.
    Protobuf,
}

impl ContentType {
    /// The media type string.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => APPLICATION_JSON,
            ContentType::Protobuf => APPLICATION_PROTOBUF,
        }
    }

    /// Parses a `Content-Type` header exactly as Mesos does: byte for byte.
    pub fn from_content_type(value: &[u8]) -> Option<Self> {
        match value {
            b"application/json" => Some(ContentType::Json),
            b"application/x-protobuf" => Some(ContentType::Protobuf),
            _ => None,
        }
    }

    /// Picks the response encoding for an `Accept` header: none means JSON;
    /// otherwise JSON if acceptable, then protobuf; `None` means 406.
    pub fn negotiate(accept: Option<&[u8]>) -> Option<Self> {
        let Some(accept) = accept else { return Some(ContentType::Json) };
        let accept = String::from_utf8_lossy(accept);
        [ContentType::Json, ContentType::Protobuf]
            .into_iter()
            .find(|ct| accepts(&accept, ct.as_str()))
    }

    /// Encodes a message.
    pub fn encode<M: ReflectMessage>(self, msg: &M) -> Vec<u8> {
        match self {
            ContentType::Json => json::to_vec(msg),
            ContentType::Protobuf => json::encode_protobuf(msg),
        }
    }

    /// Decodes a message from a peer km already trusts to speak Mesos (events
    /// on a stream it subscribed to): protobuf is decoded once, by prost,
    /// without the reflective `required` check that [`Self::decode`] adds —
    /// that check doubles the cost of every OFFERS and UPDATE event. JSON is
    /// checked either way (its reader builds the message by reflection).
    pub fn decode_event<M: ReflectMessage + Default>(self, body: &[u8]) -> Result<M, DecodeError> {
        match self {
            ContentType::Json => Ok(json::from_slice(body)?),
            ContentType::Protobuf => Ok(M::decode(body)?),
        }
    }

    /// Decodes a message, insisting (as Mesos does) that required fields are present; enum
    /// numbers the protos do not name are dropped, as Mesos's proto2 parser drops them.
    pub fn decode<M: ReflectMessage + Default>(self, body: &[u8]) -> Result<M, DecodeError> {
        match self {
            ContentType::Json => Ok(json::from_slice(body)?),
            ContentType::Protobuf => json::decode_protobuf_checked(body),
        }
    }
}

impl std::fmt::Display for ContentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an `Accept` value admits `media` (`type/subtype`, `type/*` or
/// `*/*`, with any `q` other than 0).
fn accepts(accept: &str, media: &str) -> bool {
    let (ty, _) = media.split_once('/').unwrap_or((media, ""));
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let candidate = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let zero_q = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if zero_q {
            return false;
        }
        candidate == media
            || candidate == "*/*"
            || candidate.strip_suffix("/*").is_some_and(|t| t == ty)
    })
}

/// A body that could not be turned into the expected message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid protobuf for the message.
    #[error("failed to parse protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Not valid JSON, or JSON that does not fit the message.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// Well-formed but lacking `required` fields.
    #[error("missing required fields: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_is_matched_byte_for_byte() {
        assert_eq!(ContentType::from_content_type(b"application/json"), Some(ContentType::Json));
        assert_eq!(
            ContentType::from_content_type(b"application/x-protobuf"),
            Some(ContentType::Protobuf)
        );
        assert_eq!(ContentType::from_content_type(b"application/json; charset=utf-8"), None);
        assert_eq!(ContentType::from_content_type(b"Application/JSON"), None);
        assert_eq!(ContentType::from_content_type(b"text/plain"), None);
    }

    #[test]
    fn accept_prefers_json_and_understands_wildcards() {
        let n = |a: &str| ContentType::negotiate(Some(a.as_bytes()));
        assert_eq!(ContentType::negotiate(None), Some(ContentType::Json));
        assert_eq!(n("application/x-protobuf"), Some(ContentType::Protobuf));
        assert_eq!(n("application/x-protobuf, application/json"), Some(ContentType::Json));
        assert_eq!(n("*/*"), Some(ContentType::Json));
        assert_eq!(n("application/*"), Some(ContentType::Json));
        assert_eq!(n("application/json;q=0, application/x-protobuf"), Some(ContentType::Protobuf));
        assert_eq!(n("text/html"), None);
        assert_eq!(n("application/recordio"), None);
    }
}
