//! RecordIO, the framing of every Mesos event stream: `<decimal length>\n<bytes>`.
//!
//! Record boundaries have nothing to do with HTTP chunk boundaries, so the
//! [`Decoder`] accepts bytes in whatever pieces they arrive and yields whole
//! records. Bad input is a typed [`RecordIoError`], never a panic, and after
//! one the decoder stays failed (as Mesos's does): a stream that lost its
//! framing cannot be resynchronised.

use bytes::{Buf, Bytes, BytesMut};

/// Records larger than this are refused unless the caller chooses otherwise.
/// An OFFERS event for thousands of agents stays far below it.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 64 * 1024 * 1024;

/// A length header longer than this many digits cannot be a valid `u64`.
const MAX_HEADER_DIGITS: usize = 20;

/// Why a RecordIO stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    /// The length header held something other than ASCII digits.
    #[error(
        "malformed RecordIO header: unexpected byte 0x{byte:02x} at offset {offset} of the header"
    )]
    BadHeader {
        /// The offending byte.
        byte: u8,
        /// Its position inside the header.
        offset: usize,
    },
    /// The length header was empty (`\n` with no digits) or absurdly long.
    #[error("malformed RecordIO header: {0}")]
    BadLength(&'static str),
    /// The announced record is bigger than the configured maximum.
    #[error("RecordIO record of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Configured maximum.
        max: usize,
    },
    /// The stream ended inside a header or a record.
    #[error("RecordIO stream truncated: {0}")]
    Truncated(String),
    /// An earlier error left the decoder unusable.
    #[error("RecordIO decoder failed earlier and cannot continue")]
    Failed,
}

/// Frames one record.
pub fn encode(record: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(record.len() + 21);
    encode_into(record, &mut out);
    out.freeze()
}

/// Appends one framed record to `out`.
pub fn encode_into(record: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.extend_from_slice(b"\n");
    out.extend_from_slice(record);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading digits; `digits` seen so far, `len` accumulated.
    Header {
        digits: usize,
        len: u64,
    },
    /// Waiting for `remaining` bytes of record data.
    Body {
        len: usize,
    },
    Failed,
}

/// An incremental RecordIO decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    state: State,
    max_record_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORD_SIZE)
    }
}

impl Decoder {
    /// A decoder refusing records above `max_record_size` bytes.
    pub fn new(max_record_size: usize) -> Self {
        Self { buf: BytesMut::new(), state: State::Header { digits: 0, len: 0 }, max_record_size }
    }

    /// Feeds bytes as they arrive.
    pub fn push(&mut self, data: &[u8]) {
        if self.state != State::Failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Returns the next complete record, `Ok(None)` when more bytes are needed.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        loop {
            match self.state {
                State::Failed => return Err(RecordIoError::Failed),
                State::Header { digits, len } => {
                    let Some(&byte) = self.buf.first() else { return Ok(None) };
                    self.buf.advance(1);
                    match byte {
                        b'0'..=b'9' => {
                            if digits == MAX_HEADER_DIGITS {
                                return self
                                    .fail(RecordIoError::BadLength("length has too many digits"));
                            }
                            let len = len
                                .checked_mul(10)
                                .and_then(|l| l.checked_add(u64::from(byte - b'0')));
                            let Some(len) = len else {
                                return self.fail(RecordIoError::BadLength("length overflows u64"));
                            };
                            self.state = State::Header { digits: digits + 1, len };
                        }
                        b'\n' if digits > 0 => {
                            if len > self.max_record_size as u64 {
                                return self.fail(RecordIoError::TooLarge {
                                    size: len,
                                    max: self.max_record_size,
                                });
                            }
                            // Fits in usize: bounded by max_record_size.
                            self.state = State::Body { len: len as usize };
                        }
                        b'\n' => return self.fail(RecordIoError::BadLength("empty length")),
                        byte => {
                            return self.fail(RecordIoError::BadHeader { byte, offset: digits });
                        }
                    }
                }
                State::Body { len } => {
                    if self.buf.len() < len {
                        self.buf.reserve(len - self.buf.len());
                        return Ok(None);
                    }
                    self.state = State::Header { digits: 0, len: 0 };
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
            }
        }
    }

    /// Call at end of stream: an error if it ended inside a header or record.
    pub fn finish(&self) -> Result<(), RecordIoError> {
        match self.state {
            State::Failed => Err(RecordIoError::Failed),
            State::Header { digits: 0, .. } if self.buf.is_empty() => Ok(()),
            State::Header { digits, .. } => Err(RecordIoError::Truncated(format!(
                "stream ended after {digits} digit(s) of a length header"
            ))),
            State::Body { len } => Err(RecordIoError::Truncated(format!(
                "stream ended {} bytes into a {len}-byte record",
                self.buf.len()
            ))),
        }
    }

    fn fail<T>(&mut self, err: RecordIoError) -> Result<T, RecordIoError> {
        self.state = State::Failed;
        self.buf = BytesMut::new();
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(pieces: &[&[u8]]) -> Result<Vec<Bytes>, RecordIoError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.push(p);
            while let Some(r) = d.next_record()? {
                out.push(r);
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn heartbeat_record_matches_mesos_bytes() {
        assert_eq!(&encode(br#"{"type":"HEARTBEAT"}"#)[..], b"20\n{\"type\":\"HEARTBEAT\"}");
        assert_eq!(&encode(&[0x08, 0x08])[..], b"2\n\x08\x08");
    }

    #[test]
    fn several_records_in_one_read_and_one_record_over_many() {
        let recs = decode_all(&[b"3\nabc2\nde0\n1", b"\nf"]).unwrap();
        assert_eq!(
            recs,
            vec![Bytes::from("abc"), Bytes::from("de"), Bytes::new(), Bytes::from("f")]
        );
        let recs = decode_all(&[b"1", b"0", b"\n0123", b"45", b"6789"]).unwrap();
        assert_eq!(recs, vec![Bytes::from("0123456789")]);
    }

    #[test]
    fn malformed_header_fails_permanently() {
        let mut d = Decoder::default();
        d.push(b"1x\nabc");
        assert_eq!(d.next_record(), Err(RecordIoError::BadHeader { byte: b'x', offset: 1 }));
        d.push(b"3\nabc");
        assert_eq!(d.next_record(), Err(RecordIoError::Failed));
        assert_eq!(decode_all(&[b"\nabc"]), Err(RecordIoError::BadLength("empty length")));
        assert_eq!(
            decode_all(&[b" 3\nabc"]),
            Err(RecordIoError::BadHeader { byte: b' ', offset: 0 })
        );
        assert!(matches!(
            decode_all(&[b"99999999999999999999999\n"]),
            Err(RecordIoError::BadLength(_))
        ));
    }

    #[test]
    fn oversized_records_are_refused_before_buffering() {
        let mut d = Decoder::new(4);
        d.push(b"5\nhello");
        assert_eq!(d.next_record(), Err(RecordIoError::TooLarge { size: 5, max: 4 }));
    }

    #[test]
    fn truncation_is_reported_at_end_of_stream() {
        assert!(matches!(decode_all(&[b"5\nhel"]), Err(RecordIoError::Truncated(_))));
        assert!(matches!(decode_all(&[b"3\nabc12"]), Err(RecordIoError::Truncated(_))));
        assert_eq!(decode_all(&[b""]), Ok(vec![]));
    }

    proptest! {
        #[test]
        fn any_split_round_trips(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut wire = BytesMut::new();
            for r in &records {
                encode_into(r, &mut wire);
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points.into_iter().chain(std::iter::once(wire.len())) {
                pieces.push(&wire[last..p]);
                last = p;
            }
            let decoded = decode_all(&pieces).unwrap();
            let expected: Vec<Bytes> = records.into_iter().map(Bytes::from).collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut d = Decoder::new(1024);
            d.push(&data);
            while let Ok(Some(_)) = d.next_record() {}
            let _ = d.finish();
        }
    }
}
