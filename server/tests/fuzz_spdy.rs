//! Fuzzing of SPDY/3.1 frame decoding (time-bounded, see
//! `gantry-fuzzkit`): arbitrary bytes from a client must give frames or an
//! error, never a panic or a hang, and every decoded frame must consume
//! input. Each input runs on a worker thread with a deadline, so a hang is
//! a failure rather than a stuck test.

use std::sync::mpsc;
use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};
use gantry::streaming::spdy::{dictionary, Codec, Frame};
use gantry_fuzzkit as fuzz;

/// A short name per frame kind, for outcomes.
fn name(f: &Frame) -> &'static str {
    match f {
        Frame::Data { .. } => "data",
        Frame::SynStream { .. } => "syn",
        Frame::SynReply { .. } => "reply",
        Frame::RstStream { .. } => "rst",
        Frame::Settings(_) => "settings",
        Frame::Ping(_) => "ping",
        Frame::GoAway { .. } => "goaway",
        Frame::Headers { .. } => "headers",
        Frame::WindowUpdate { .. } => "window",
        Frame::Other(_) => "other",
    }
}

/// Decodes all of `input` with one codec (header compression is shared
/// across a connection's frames); the outcome names the frames and how it
/// ended.
fn decode_all(input: &[u8]) -> String {
    let mut codec = Codec::new();
    let mut buf = input.to_vec();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let before = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(f)) => {
                assert!(buf.len() < before, "a frame consumed nothing");
                out.push(name(&f).to_string());
            }
            Ok(None) => {
                out.push("partial".into());
                break;
            }
            Err(e) => {
                let kind = e.to_string();
                out.push(kind.split(':').take(2).collect::<Vec<_>>().join(":"));
                break;
            }
        }
    }
    out.truncate(6);
    out.join(" ")
}

/// `decode_all` on a thread that must finish within a few seconds.
fn decode_bounded(input: &[u8]) -> String {
    let (tx, rx) = mpsc::channel();
    let data = input.to_vec();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(|| decode_all(&data)));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => panic!("decoding panicked"),
        Err(_) => panic!("decoding a {} byte input did not finish", input.len()),
    }
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A conversation's frames, encoded by one codec; each prefix is a seed.
fn seeds() -> Vec<Vec<u8>> {
    let conversation = [
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            flags: 0,
            headers: headers(&[("streamtype", "error"), ("port", "80")]),
        },
        Frame::SynStream {
            stream_id: 3,
            associated_to: 0,
            flags: 0,
            headers: headers(&[("streamtype", "stdout")]),
        },
        Frame::Data {
            stream_id: 3,
            flags: 1,
            data: b"hello".to_vec(),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: headers(&[]),
        },
        Frame::Headers {
            stream_id: 3,
            flags: 0,
            headers: headers(&[("x", "y")]),
        },
        Frame::Settings(vec![(0, 7, 65536)]),
        Frame::WindowUpdate {
            stream_id: 3,
            delta: 1024,
        },
        Frame::Ping(1),
        Frame::RstStream {
            stream_id: 3,
            status: 5,
        },
        Frame::GoAway {
            last_good: 3,
            status: 0,
        },
    ];
    let mut codec = Codec::new();
    let mut all = Vec::new();
    let mut seeds = Vec::new();
    for f in &conversation {
        let bytes = codec.encode(f).unwrap();
        all.extend_from_slice(&bytes);
        seeds.push(all.clone());
    }
    seeds
}

#[test]
fn fuzz_spdy_frame_decoding() {
    fuzz::bytes("spdy-decode", seeds(), 8 << 10, decode_bounded);
}

/// A SYN_STREAM whose header block is a whole zlib stream (ended with
/// FINISH) followed by more bytes.
fn syn_stream_with_trailing_bytes() -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&1u32.to_be_bytes());
    for s in ["streamtype", "stdout"] {
        raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
        raw.extend_from_slice(s.as_bytes());
    }
    let mut z = Compress::new(Compression::default(), true);
    z.set_dictionary(dictionary()).unwrap();
    let mut block = Vec::with_capacity(1024);
    z.compress_vec(&raw, &mut block, FlushCompress::Finish)
        .unwrap();
    block.extend_from_slice(b"trailing garbage");
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u32.to_be_bytes()); // stream id
    payload.extend_from_slice(&0u32.to_be_bytes()); // associated stream
    payload.extend_from_slice(&[0, 0]); // priority, slot
    payload.extend_from_slice(&block);
    let mut frame = vec![0x80, 3, 0, 1, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(&payload);
    frame
}

/// Found while writing the fuzz target (a crafted input: the random
/// mutations did not reach it): bytes after the end of the zlib stream
/// made the header decompressor spin forever on a runtime worker.
#[test]
fn a_header_block_with_bytes_after_its_zlib_end_is_refused() {
    let outcome = decode_bounded(&syn_stream_with_trailing_bytes());
    assert!(outcome.contains("header compression"), "{outcome}");
}
