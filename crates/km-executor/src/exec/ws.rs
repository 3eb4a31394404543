//! The WebSocket transport of exec (`v5.channel.k8s.io`, `v4.channel.k8s.io`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::{BufMut as _, Bytes, BytesMut};
use futures::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use km_runtime::runtime::ExecOutput;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::{Input, Target};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, c]` closes channel `c`.
const CLOSE: u8 = 255;

/// A negotiated WebSocket upgrade.
#[derive(Debug)]
pub(crate) struct WebSocket {
    protocol: &'static str,
    accept: String,
}

impl WebSocket {
    /// `None` when the request is no WebSocket upgrade; an error when it is one but offers no
    /// subprotocol this endpoint speaks.
    pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Result<WebSocket, String>> {
        let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok())?;
        if !upgrade.eq_ignore_ascii_case("websocket") {
            return None;
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Some(Err("a WebSocket upgrade needs Sec-WebSocket-Key".into()));
        };
        let offered: Vec<&str> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let protocol = [V5, V4].into_iter().find(|p| offered.contains(p));
        Some(match protocol {
            Some(protocol) => Ok(WebSocket {
                protocol,
                accept: tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                    key.as_bytes(),
                ),
            }),
            None => Err(format!(
                "none of the offered WebSocket subprotocols {offered:?} is served; use {V5} or {V4}"
            )),
        })
    }

    /// Headers of the 101 answer.
    pub(crate) fn response_headers(&self) -> Vec<(header::HeaderName, HeaderValue)> {
        vec![
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (
                header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&self.accept).unwrap_or(HeaderValue::from_static("")),
            ),
            (header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(self.protocol)),
        ]
    }

    /// Serves the session on the upgraded connection.
    pub(crate) async fn serve(self, upgraded: hyper::upgrade::Upgraded, target: Target) {
        let stream =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        serve_stream(stream, self.protocol == V5, target).await;
    }
}

async fn serve_stream<S>(stream: WebSocketStream<S>, v5: bool, target: Target)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = stream.split();
    let (input_tx, input_rx) = mpsc::channel::<Input>(16);
    let (output_tx, mut output_rx) = mpsc::channel::<ExecOutput>(16);
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let input = match data.first() {
                Some(&STDIN) => Input::Stdin(data.slice(1..)),
                Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => Input::StdinClosed,
                // Terminal sizes: the runtimes give commands no resizable terminal.
                Some(&RESIZE) | Some(_) | None => continue,
            };
            if input_tx.send(input).await.is_err() {
                break;
            }
        }
    });
    let stdout = target.query.stdout;
    let stderr = target.query.stderr;
    let run = super::run(target, input_rx, output_tx);
    tokio::pin!(run);
    let status = loop {
        tokio::select! {
            status = &mut run => break status,
            Some(chunk) = output_rx.recv() => {
                let (channel, data) = match chunk {
                    ExecOutput::Stdout(d) if stdout => (STDOUT, d),
                    ExecOutput::Stderr(d) if stderr => (STDERR, d),
                    _ => continue,
                };
                if sink.send(Message::Binary(framed(channel, &data))).await.is_err() {
                    break None;
                }
            }
        }
    };
    // Output still queued when the command ended goes out before the status.
    while let Ok(chunk) = output_rx.try_recv() {
        let (channel, data) = match chunk {
            ExecOutput::Stdout(d) if stdout => (STDOUT, d),
            ExecOutput::Stderr(d) if stderr => (STDERR, d),
            _ => continue,
        };
        if sink.send(Message::Binary(framed(channel, &data))).await.is_err() {
            break;
        }
    }
    if let Some(status) = status {
        let body = serde_json::to_vec(&status).unwrap_or_default();
        let _ = sink.send(Message::Binary(framed(ERROR, &body))).await;
    }
    // A normal closure (1000) is how the client tells the end of the session from a failure.
    let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = sink.send(Message::Close(Some(normal))).await;
    let _ = sink.close().await;
    // The client answers the close; give it a moment, then drop the connection anyway.
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
}

fn framed(channel: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(channel);
    b.put_slice(data);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_newest_offered_channel_protocol_is_chosen() {
        let offered = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "v4.channel.k8s.io, v5.channel.k8s.io"),
        ]);
        let ws = WebSocket::negotiate(&offered).expect("a websocket").expect("accepted");
        assert_eq!(ws.protocol, V5);
        // RFC 6455's example key and answer.
        assert_eq!(ws.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let old = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "x"),
            ("sec-websocket-protocol", "channel.k8s.io"),
        ]);
        let err = WebSocket::negotiate(&old).expect("a websocket").expect_err("refused");
        assert!(err.contains("v5.channel.k8s.io"), "{err}");
        assert!(WebSocket::negotiate(&headers(&[("upgrade", "SPDY/3.1")])).is_none());
    }
}
