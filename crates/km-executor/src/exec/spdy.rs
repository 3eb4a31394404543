//! The SPDY/3.1 transport of exec (`X-Stream-Protocol-Version: v4.channel.k8s.io`).
//!
//! Only what the remote-command protocol uses of SPDY is served: the client opens the streams
//! (SYN_STREAM with a `streamtype` header: error, stdin, stdout, stderr, resize), the server
//! answers each with SYN_REPLY, data flows in DATA frames, FIN ends a direction, PINGs are
//! echoed. Header blocks are zlib streams that run across the whole connection (one per
//! direction), primed with SPDY/3's fixed dictionary. Like the Go implementation kubectl uses,
//! no flow-control window is enforced in either direction.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use hyper_util::rt::TokioIo;
use km_runtime::runtime::ExecOutput;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};

use super::{Input, Target};

/// SPDY/3's header-compression dictionary (from the protocol's specification).
const DICTIONARY: &[u8] = include_bytes!("spdy3-dictionary.bin");
const PROTOCOL: &str = "v4.channel.k8s.io";
const VERSION: u16 = 3;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;

/// Longest frame accepted from a client: frames carry at most 2^24 - 1 bytes, but nothing
/// this protocol sends comes near a megabyte.
const MAX_FRAME: usize = 1 << 20;
/// Longest decompressed header block.
const MAX_HEADERS: usize = 64 << 10;
/// How long the client has to open the streams it asked for.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// A negotiated SPDY upgrade.
#[derive(Debug)]
pub(crate) struct Spdy;

impl Spdy {
    /// `None` when the request is no SPDY upgrade; an error when it is one but offers no
    /// version of the stream protocol this endpoint speaks.
    pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Result<Spdy, String>> {
        let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok())?;
        if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
            return None;
        }
        let offered: Vec<&str> = headers
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        Some(if offered.contains(&PROTOCOL) {
            Ok(Spdy)
        } else {
            Err(format!(
                "none of the offered stream protocols {offered:?} is served; use {PROTOCOL}"
            ))
        })
    }

    pub(crate) fn response_headers(&self) -> Vec<(header::HeaderName, HeaderValue)> {
        vec![
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (header::UPGRADE, HeaderValue::from_static("SPDY/3.1")),
            (
                header::HeaderName::from_static("x-stream-protocol-version"),
                HeaderValue::from_static(PROTOCOL),
            ),
        ]
    }

    /// Serves the session on the upgraded connection.
    pub(crate) async fn serve(self, upgraded: hyper::upgrade::Upgraded, target: Target) {
        serve_io(TokioIo::new(upgraded), target).await;
    }
}

/// The channels of the remote-command protocol, as SPDY streams name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Channel {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl Channel {
    fn parse(name: &str) -> Option<Channel> {
        Some(match name {
            "error" => Channel::Error,
            "stdin" => Channel::Stdin,
            "stdout" => Channel::Stdout,
            "stderr" => Channel::Stderr,
            "resize" => Channel::Resize,
            _ => return None,
        })
    }
}

/// What the server writes.
#[derive(Debug)]
enum Out {
    Reply(u32),
    Data { stream: u32, data: Bytes, fin: bool },
    Ping(u32),
}

/// A frame read from the client.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    SynStream {
        stream: u32,
        headers: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        data: Bytes,
        fin: bool,
    },
    Ping(u32),
    GoAway,
    Reset(u32),
    /// SETTINGS, WINDOW_UPDATE, HEADERS and the like: nothing to act on.
    Other,
}

#[derive(Debug, thiserror::Error)]
enum SpdyError {
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes is larger than accepted")]
    TooLarge(usize),
    #[error("SPDY version {0} is not 3")]
    Version(u16),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("header block: {0}")]
    Headers(String),
}

/// Reads frames; owns the inbound header decompressor.
struct Reader<R> {
    io: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(io: R) -> Self {
        Reader { io, inflate: Decompress::new(true) }
    }

    /// The next frame; `None` at a clean end of the connection.
    async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let length = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        if length > MAX_FRAME {
            return Err(SpdyError::TooLarge(length));
        }
        let mut payload = vec![0u8; length];
        self.io.read_exact(&mut payload).await?;
        let mut payload = Bytes::from(payload);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream: first & 0x7fff_ffff,
                data: payload,
                fin: flags & FLAG_FIN != 0,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        Ok(Some(match (first & 0xffff) as u16 {
            SYN_STREAM => {
                if payload.len() < 10 {
                    return Err(SpdyError::Malformed("SYN_STREAM"));
                }
                let stream = payload.get_u32() & 0x7fff_ffff;
                payload.advance(6); // associated stream, priority, slot
                let headers = self.headers(&payload)?;
                Frame::SynStream { stream, headers }
            }
            PING => {
                if payload.len() < 4 {
                    return Err(SpdyError::Malformed("PING"));
                }
                Frame::Ping(payload.get_u32())
            }
            RST_STREAM => {
                if payload.len() < 8 {
                    return Err(SpdyError::Malformed("RST_STREAM"));
                }
                Frame::Reset(payload.get_u32() & 0x7fff_ffff)
            }
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }

    /// Decompresses and parses a header block.
    fn headers(&mut self, compressed: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut block = Vec::with_capacity(256);
        let mut input = compressed;
        loop {
            if block.len() >= MAX_HEADERS {
                return Err(SpdyError::Headers("larger than accepted".into()));
            }
            block.reserve(1024);
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self.inflate.decompress_vec(input, &mut block, FlushDecompress::Sync);
            let used = usize::try_from(self.inflate.total_in() - before_in).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let produced = self.inflate.total_out() - before_out;
                    if input.is_empty() && block.len() < block.capacity() {
                        break;
                    }
                    if used == 0 && produced == 0 && block.len() < block.capacity() {
                        return Err(SpdyError::Headers(
                            "the compressed block makes no progress".into(),
                        ));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Headers(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Headers(e.to_string())),
            }
        }
        parse_header_block(&block)
    }
}

fn parse_header_block(mut block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let take = |block: &mut &[u8]| -> Result<String, SpdyError> {
        if block.len() < 4 {
            return Err(SpdyError::Malformed("header block"));
        }
        let n = block.get_u32() as usize;
        if block.len() < n {
            return Err(SpdyError::Malformed("header block"));
        }
        let s = String::from_utf8_lossy(&block[..n]).into_owned();
        block.advance(n);
        Ok(s)
    };
    if block.len() < 4 {
        return Err(SpdyError::Malformed("header block"));
    }
    let count = block.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = take(&mut block)?;
        let value = take(&mut block)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// Writes frames; owns the outbound header compressor.
struct Writer<W> {
    io: W,
    deflate: Compress,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn new(io: W) -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Both ends prime their compressors with the dictionary; a fresh compressor accepts it.
        let _ = deflate.set_dictionary(DICTIONARY);
        Writer { io, deflate }
    }

    async fn write(&mut self, out: Out) -> std::io::Result<()> {
        let mut frame = BytesMut::new();
        match out {
            Out::Reply(stream) => {
                // An empty header block: zero name/value pairs.
                let block = self.compress(&0u32.to_be_bytes())?;
                control(&mut frame, SYN_REPLY, 0, 4 + block.len());
                frame.put_u32(stream);
                frame.put_slice(&block);
            }
            Out::Ping(id) => {
                control(&mut frame, PING, 0, 4);
                frame.put_u32(id);
            }
            Out::Data { stream, data, fin } => {
                // Large chunks go out in frames well below the 24-bit length limit.
                let mut chunks = data.chunks(1 << 16).peekable();
                if chunks.peek().is_none() {
                    data_frame(&mut frame, stream, fin, &[]);
                }
                while let Some(chunk) = chunks.next() {
                    data_frame(&mut frame, stream, fin && chunks.peek().is_none(), chunk);
                }
            }
        }
        self.io.write_all(&frame).await?;
        self.io.flush().await
    }

    fn compress(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut rest = input;
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(rest, &mut out, FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            let used = usize::try_from(self.deflate.total_in() - before).unwrap_or(rest.len());
            rest = &rest[used.min(rest.len())..];
            if rest.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn control(frame: &mut BytesMut, kind: u16, flags: u8, length: usize) {
    frame.put_u16(0x8000 | VERSION);
    frame.put_u16(kind);
    frame.put_u8(flags);
    frame.put_uint(length as u64, 3);
}

fn data_frame(frame: &mut BytesMut, stream: u32, fin: bool, data: &[u8]) {
    frame.put_u32(stream & 0x7fff_ffff);
    frame.put_u8(if fin { FLAG_FIN } else { 0 });
    frame.put_uint(data.len() as u64, 3);
    frame.put_slice(data);
}

/// The streams a client opens for what it asked.
fn expected(target: &Target) -> Vec<Channel> {
    let q = &target.query;
    let mut want = vec![Channel::Error];
    for (on, c) in [
        (q.stdin, Channel::Stdin),
        (q.stdout, Channel::Stdout),
        (q.stderr, Channel::Stderr),
        (q.tty, Channel::Resize),
    ] {
        if on {
            want.push(c);
        }
    }
    want
}

async fn serve_io<IO>(io: IO, target: Target)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(32);
    let writer = tokio::spawn(async move {
        let mut w = Writer::new(write);
        while let Some(out) = out_rx.recv().await {
            if let Err(e) = w.write(out).await {
                tracing::debug!("exec (SPDY): writing: {e}");
                break;
            }
        }
        let _ = w.io.shutdown().await;
    });

    let want = expected(&target);
    let (input_tx, input_rx) = mpsc::channel::<Input>(16);
    let (ready_tx, ready_rx) = oneshot::channel::<HashMap<Channel, u32>>();
    let replies = out_tx.clone();
    let reader = tokio::spawn(async move {
        let mut r = Reader::new(read);
        let mut streams: HashMap<Channel, u32> = HashMap::new();
        let mut ready = Some(ready_tx);
        let channel_of = |streams: &HashMap<Channel, u32>, id: u32| {
            streams.iter().find(|(_, s)| **s == id).map(|(c, _)| *c)
        };
        loop {
            let frame = match r.next().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("exec (SPDY): {e}");
                    break;
                }
            };
            match frame {
                Frame::SynStream { stream, headers } => {
                    let kind = headers
                        .iter()
                        .find(|(k, _)| k == "streamtype")
                        .and_then(|(_, v)| Channel::parse(v));
                    if replies.send(Out::Reply(stream)).await.is_err() {
                        break;
                    }
                    if let Some(kind) = kind {
                        streams.insert(kind, stream);
                    }
                    if want.iter().all(|c| streams.contains_key(c))
                        && let Some(tx) = ready.take()
                    {
                        let _ = tx.send(streams.clone());
                    }
                }
                Frame::Data { stream, data, fin } => {
                    if channel_of(&streams, stream) == Some(Channel::Stdin) {
                        if !data.is_empty() && input_tx.send(Input::Stdin(data)).await.is_err() {
                            break;
                        }
                        if fin && input_tx.send(Input::StdinClosed).await.is_err() {
                            break;
                        }
                    }
                }
                Frame::Ping(id) => {
                    if replies.send(Out::Ping(id)).await.is_err() {
                        break;
                    }
                }
                Frame::GoAway => break,
                Frame::Reset(_) | Frame::Other => {}
            }
        }
    });

    let streams = match tokio::time::timeout(STREAM_TIMEOUT, ready_rx).await {
        Ok(Ok(s)) => s,
        _ => {
            tracing::debug!("exec (SPDY): the client did not open its streams");
            reader.abort();
            return;
        }
    };
    let (output_tx, mut output_rx) = mpsc::channel::<ExecOutput>(16);
    let run = super::run(target, input_rx, output_tx);
    tokio::pin!(run);
    let send_chunk = |chunk: ExecOutput| {
        let (channel, data) = match chunk {
            ExecOutput::Stdout(d) => (Channel::Stdout, d),
            ExecOutput::Stderr(d) => (Channel::Stderr, d),
        };
        streams.get(&channel).map(|&stream| Out::Data { stream, data, fin: false })
    };
    let status = loop {
        tokio::select! {
            status = &mut run => break status,
            Some(chunk) = output_rx.recv() => {
                if let Some(out) = send_chunk(chunk)
                    && out_tx.send(out).await.is_err()
                {
                    break None;
                }
            }
        }
    };
    while let Ok(chunk) = output_rx.try_recv() {
        if let Some(out) = send_chunk(chunk) {
            let _ = out_tx.send(out).await;
        }
    }
    for channel in [Channel::Stdout, Channel::Stderr] {
        if let Some(&stream) = streams.get(&channel) {
            let _ = out_tx.send(Out::Data { stream, data: Bytes::new(), fin: true }).await;
        }
    }
    if let (Some(status), Some(&stream)) = (status, streams.get(&Channel::Error)) {
        let body = Bytes::from(serde_json::to_vec(&status).unwrap_or_default());
        let _ = out_tx.send(Out::Data { stream, data: body, fin: true }).await;
    }
    drop(out_tx);
    // The client closes the connection once it has read the status.
    let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's header block, compressed as the Go implementation does (zlib with the
    /// dictionary, a sync flush per block, one stream across blocks).
    fn client_block(deflate: &mut Compress, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = BytesMut::new();
        raw.put_u32(pairs.len() as u32);
        for (k, v) in pairs {
            raw.put_u32(k.len() as u32);
            raw.put_slice(k.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(1024);
        deflate.compress_vec(&raw, &mut out, FlushCompress::Sync).expect("compress");
        out
    }

    fn syn_stream(deflate: &mut Compress, stream: u32, kind: &str) -> Vec<u8> {
        let block = client_block(deflate, &[("streamtype", kind)]);
        let mut f = BytesMut::new();
        control(&mut f, SYN_STREAM, 0, 10 + block.len());
        f.put_u32(stream);
        f.put_u32(0);
        f.put_u16(0);
        f.put_slice(&block);
        f.to_vec()
    }

    #[tokio::test]
    async fn frames_from_a_client_are_read_across_one_compression_stream() {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(DICTIONARY).expect("dictionary");
        let mut wire = Vec::new();
        wire.extend(syn_stream(&mut deflate, 1, "error"));
        wire.extend(syn_stream(&mut deflate, 3, "stdout"));
        let mut ping = BytesMut::new();
        control(&mut ping, PING, 0, 4);
        ping.put_u32(7);
        wire.extend(ping);
        let mut data = BytesMut::new();
        data_frame(&mut data, 5, true, b"input");
        wire.extend(data);
        let mut r = Reader::new(&wire[..]);
        let kinds = |f: Option<Frame>| match f {
            Some(Frame::SynStream { stream, headers }) => (stream, headers[0].1.clone()),
            other => panic!("not a SYN_STREAM: {other:?}"),
        };
        assert_eq!(kinds(r.next().await.expect("read")), (1, "error".to_owned()));
        assert_eq!(kinds(r.next().await.expect("read")), (3, "stdout".to_owned()));
        assert_eq!(r.next().await.expect("read"), Some(Frame::Ping(7)));
        assert_eq!(
            r.next().await.expect("read"),
            Some(Frame::Data { stream: 5, data: Bytes::from_static(b"input"), fin: true })
        );
        assert_eq!(r.next().await.expect("end"), None);
    }

    #[tokio::test]
    async fn replies_decompress_with_the_dictionary_as_a_client_reads_them() {
        let mut w = Writer::new(Vec::new());
        w.write(Out::Reply(1)).await.expect("reply");
        w.write(Out::Reply(3)).await.expect("reply");
        let wire = w.io;
        let mut inflate = Decompress::new(true);
        let mut at = 0;
        for stream in [1u32, 3] {
            let length = usize::from(wire[at + 5]) << 16
                | usize::from(wire[at + 6]) << 8
                | usize::from(wire[at + 7]);
            assert_eq!(u16::from_be_bytes([wire[at + 2], wire[at + 3]]), SYN_REPLY);
            let body = &wire[at + 8..at + 8 + length];
            assert_eq!(u32::from_be_bytes([body[0], body[1], body[2], body[3]]), stream);
            let mut block = Vec::with_capacity(64);
            let mut input = &body[4..];
            loop {
                let before = inflate.total_in();
                match inflate.decompress_vec(input, &mut block, FlushDecompress::Sync) {
                    Ok(_) => {}
                    Err(e) if e.needs_dictionary().is_some() => {
                        inflate.set_dictionary(DICTIONARY).expect("dictionary");
                    }
                    Err(e) => panic!("{e}"),
                }
                input = &input[(inflate.total_in() - before) as usize..];
                if input.is_empty() {
                    break;
                }
            }
            assert_eq!(block, 0u32.to_be_bytes(), "an empty header block");
            at += 8 + length;
        }
        assert_eq!(at, wire.len());
    }

    #[tokio::test]
    async fn oversized_and_foreign_frames_are_refused() {
        let mut big = BytesMut::new();
        data_frame(&mut big, 1, false, &[]);
        big[5] = 0xff; // a 16 MiB length
        let mut r = Reader::new(&big[..]);
        assert!(matches!(r.next().await, Err(SpdyError::TooLarge(_))));
        let mut v2 = BytesMut::new();
        v2.put_u16(0x8002);
        v2.put_u16(PING);
        v2.put_u32(4);
        v2.put_u32(1);
        let mut r = Reader::new(&v2[..]);
        assert!(matches!(r.next().await, Err(SpdyError::Version(2))));
    }
}
