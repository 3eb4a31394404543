//! Arbitrary bytes, in arbitrary splits, through `recordio::Decoder`.
//!
//! Input layout: byte 0 picks the maximum record size, byte 1 seeds the
//! split points, the rest is the stream. Checked:
//! - nothing panics;
//! - the outcome (records, then the error or the end-of-stream verdict) does
//!   not depend on how the bytes were split;
//! - what was decoded is exactly a prefix of the input: each record is its
//!   decimal length (leading zeros allowed, as stout reads it), `\n`, its
//!   bytes; re-encoding the records gives that prefix with canonical headers,
//!   and decoding the re-encoding gives the same records back;
//! - after an error the decoder stays failed;
//! - `finish` accepts exactly the streams that end on a record boundary.

#![no_main]

use bytes::Bytes;
use km_mesos::recordio::{Decoder, RecordIoError, encode};
use libfuzzer_sys::fuzz_target;

const MAX_SIZES: [usize; 6] = [0, 1, 7, 64, 4096, 1 << 20];

#[derive(Debug, PartialEq)]
struct Outcome {
    records: Vec<Bytes>,
    /// The error `next_record` returned, if any.
    error: Option<RecordIoError>,
    /// `finish()` after the last push (only when no error occurred).
    finish: Option<Result<(), RecordIoError>>,
}

fn decode(pieces: &[&[u8]], max: usize) -> Outcome {
    let mut d = Decoder::new(max);
    let mut records = Vec::new();
    for piece in pieces {
        d.push(piece);
        loop {
            match d.next_record() {
                Ok(Some(r)) => records.push(r),
                Ok(None) => break,
                Err(e) => {
                    // Failed for good, whatever comes next.
                    assert_eq!(d.next_record(), Err(RecordIoError::Failed));
                    d.push(b"1\nx");
                    assert_eq!(d.next_record(), Err(RecordIoError::Failed));
                    assert_eq!(d.finish(), Err(RecordIoError::Failed));
                    return Outcome { records, error: Some(e), finish: None };
                }
            }
        }
    }
    Outcome { records, error: None, finish: Some(d.finish()) }
}

/// Deterministic split points from a seed (xorshift), including empty pieces.
fn split<'a>(data: &'a [u8], seed: u8) -> Vec<&'a [u8]> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 9) as usize; // 0..=8 bytes, 0 = an empty push
        let n = n.min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    pieces
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = MAX_SIZES[usize::from(data[0]) % MAX_SIZES.len()];
    let stream = &data[2..];

    let whole = decode(&[stream], max);
    let pieces = decode(&split(stream, data[1]), max);
    assert_eq!(whole, pieces, "outcome depends on the split");
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(whole, decode(&bytewise, max), "outcome differs byte by byte");

    // The records are a prefix of the input.
    let mut pos = 0;
    let mut canonical = Vec::new();
    for record in &whole.records {
        assert!(record.len() <= max, "record over the maximum");
        let digits_end =
            pos + stream[pos..].iter().position(|&b| b == b'\n').expect("a header ends in \\n");
        let digits = std::str::from_utf8(&stream[pos..digits_end]).expect("ASCII digits");
        assert!(
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
            "header {digits:?}"
        );
        assert_eq!(
            digits.trim_start_matches('0'),
            record.len().to_string().trim_start_matches('0')
        );
        let data_start = digits_end + 1;
        assert_eq!(&stream[data_start..data_start + record.len()], &record[..]);
        pos = data_start + record.len();
        canonical.extend_from_slice(&encode(record));
    }
    if whole.finish == Some(Ok(())) {
        assert_eq!(pos, stream.len(), "finish() accepted a stream with leftover bytes");
    } else if whole.error.is_none() {
        assert!(pos < stream.len(), "finish() refused a stream ending on a record boundary");
        assert!(
            matches!(whole.finish, Some(Err(RecordIoError::Truncated(_)))),
            "{:?}",
            whole.finish
        );
    }

    // Re-encoding decodes to the same records, cleanly.
    let again = decode(&[&canonical], usize::MAX);
    assert_eq!(again.records, whole.records);
    assert_eq!(again.error, None);
    assert_eq!(again.finish, Some(Ok(())));
});
