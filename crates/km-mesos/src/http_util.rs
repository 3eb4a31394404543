//! HTTP plumbing shared by the clients: posting calls, following Mesos's
//! scheme-relative redirects to the leader, and reading RecordIO streams.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{RequestBuilder, Response, StatusCode};
use url::Url;

use crate::codec::{ContentType, DecodeError};
use crate::recordio::{self, RecordIoError};

/// Header carrying the scheduler subscription's identity.
pub(crate) const MESOS_STREAM_ID: &str = "Mesos-Stream-Id";

/// How many 307 hops a call may take before we give up.
const MAX_REDIRECTS: usize = 4;

/// Why a call to a Mesos endpoint did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be sent or the response not read.
    #[error("cannot reach {url}: {source}")]
    Transport {
        /// Endpoint.
        url: String,
        /// Underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered with an unexpected status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// Endpoint.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// The (plain text) reason Mesos gives.
        body: String,
    },
    /// A redirect that cannot be followed.
    #[error("bad redirect from {url}: {problem}")]
    Redirect {
        /// Endpoint that redirected.
        url: String,
        /// What was wrong.
        problem: String,
    },
    /// The response body was not the expected message.
    #[error("undecodable response from {url}: {source}")]
    Decode {
        /// Endpoint.
        url: String,
        /// Underlying error.
        #[source]
        source: Box<DecodeError>,
    },
    /// The call needs a live subscription and there is none.
    #[error("not subscribed to the master")]
    NotSubscribed,
}

impl CallError {
    /// The HTTP status, if the server answered with one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Why an event stream ended or broke.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The connection failed mid-stream.
    #[error("event stream broke: {0}")]
    Transport(#[from] reqwest::Error),
    /// The framing was corrupt.
    #[error(transparent)]
    RecordIo(#[from] RecordIoError),
    /// A record did not decode as an event.
    #[error("undecodable event: {0}")]
    Decode(#[from] DecodeError),
}

/// Posts an encoded body to `url`, following 307 redirects (scheme-relative
/// `Location`, as Mesos sends) by re-posting the same body. Returns the URL
/// that finally answered together with its response.
pub(crate) async fn post(
    client: &reqwest::Client,
    mut url: Url,
    content_type: ContentType,
    accept: Option<ContentType>,
    body: Vec<u8>,
    customize: impl Fn(RequestBuilder) -> RequestBuilder,
) -> Result<(Url, Response), CallError> {
    let body = Bytes::from(body);
    for _ in 0..=MAX_REDIRECTS {
        let mut req =
            client.post(url.clone()).header(CONTENT_TYPE, content_type.as_str()).body(body.clone());
        if let Some(accept) = accept {
            req = req.header(ACCEPT, accept.as_str());
        }
        let resp = customize(req)
            .send()
            .await
            .map_err(|source| CallError::Transport { url: url.to_string(), source })?;
        if resp.status() != StatusCode::TEMPORARY_REDIRECT {
            return Ok((url, resp));
        }
        url = redirect_target(&url, &resp)?;
        tracing::debug!(%url, "following redirect to the leading master");
    }
    Err(CallError::Redirect {
        url: url.to_string(),
        problem: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

fn redirect_target(from: &Url, resp: &Response) -> Result<Url, CallError> {
    let bad =
        |problem: &str| CallError::Redirect { url: from.to_string(), problem: problem.to_owned() };
    let location = resp.headers().get(LOCATION).ok_or_else(|| bad("no Location header"))?;
    let location = location.to_str().map_err(|_| bad("Location is not ASCII"))?;
    from.join(location).map_err(|e| bad(&format!("unusable Location '{location}': {e}")))
}

/// Turns a non-success response into a [`CallError::Status`] with its text.
pub(crate) async fn expect_status(
    url: &Url,
    resp: Response,
    expected: StatusCode,
) -> Result<Response, CallError> {
    if resp.status() == expected {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(CallError::Status { url: url.to_string(), status, body: body.trim().to_owned() })
}

/// The encoding a streaming response declares (Mesos names the record type).
pub(crate) fn response_content_type(resp: &Response) -> Option<ContentType> {
    resp.headers().get(CONTENT_TYPE).and_then(|v| ContentType::from_content_type(v.as_bytes()))
}

/// Reads whole records from a streaming response body.
pub(crate) struct RecordReader {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    decoder: recordio::Decoder,
}

impl RecordReader {
    pub(crate) fn new(resp: Response) -> Self {
        Self { body: Box::pin(resp.bytes_stream()), decoder: recordio::Decoder::default() }
    }

    /// The next record; `Ok(None)` at a clean end of stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, StreamError> {
        loop {
            if let Some(record) = self.decoder.next_record()? {
                return Ok(Some(record));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => return Err(StreamError::Transport(e)),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

/// Joins an API path onto a base URL given as `http://host:port` (any path
/// on the base is replaced).
pub(crate) fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(path);
    url.set_query(None);
    url
}
