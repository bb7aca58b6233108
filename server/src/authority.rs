//! Makes any gRPC client's `:authority` acceptable on the unix socket.
//!
//! The HTTP/2 server under tonic (the `h2` crate) resets every stream whose
//! `:authority` is not a valid URI authority, with PROTOCOL_ERROR. gRPC's C
//! core (Python, Ruby, C++, PHP clients) sends the percent-encoded socket path
//! there, grpc-java the raw path; grpc-go (kubelet, crictl) sends
//! `localhost`. On a unix socket the authority names nothing, so the value
//! carries no meaning we could lose by replacing it.
//!
//! [`AuthorityFix`] sits between the accepted socket and the HTTP/2 server
//! and reads the client's side of the connection frame by frame:
//! - until the first header block, frames are parsed (DATA and the rest are
//!   forwarded as they arrive, never buffered whole);
//! - if the first request's authority is acceptable (kubelet's case) the
//!   rest of the connection is forwarded frame by frame as it arrives, with
//!   no HPACK work;
//! - otherwise every header block on the connection is HPACK-decoded and
//!   re-encoded as literals without indexing, with an unacceptable
//!   `:authority` replaced by `localhost`. Literals without indexing leave
//!   the server's decoding table empty, so our encoder needs no table state
//!   of its own; the client's table is mirrored by our decoder.
//!
//! Since it sees every frame, it also enforces what tonic has no setting for:
//! a client may not make the server answer PING or SETTINGS frames without
//! end (the ping and settings floods of CVE-2019-9512/9515); past
//! [`CONTROL_BURST`] such frames, faster than [`CONTROL_PER_SEC`] a second,
//! the connection is closed.
//!
//! Written by hand because no crate rewrites HTTP/2 headers on a live
//! connection; HPACK itself comes from the `loona-hpack` crate. The server's
//! direction (responses) is never touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The frame size the server accepts (SETTINGS_MAX_FRAME_SIZE; h2's default,
/// which gantry does not raise): frames we write never exceed it.
const MAX_FRAME: usize = 16_384;
/// The server's HPACK table size (SETTINGS_HEADER_TABLE_SIZE, h2's default):
/// what a client may size its encoding table to.
const HEADER_TABLE_SIZE: usize = 4096;
/// The largest header block (all its frames) a client may send; the server
/// itself refuses header lists above [`crate::daemon::MAX_HEADER_LIST_BYTES`],
/// and a block is never larger than its list.
pub const MAX_HEADER_BLOCK: usize = crate::daemon::MAX_HEADER_LIST_BYTES as usize;
const READ_CHUNK: usize = 16 * 1024;

/// PING and SETTINGS frames (not acknowledgements) a client may send at once,
/// and how many a second after that: generous for keepalives and settings
/// changes, far below a flood.
pub const CONTROL_BURST: f64 = 50.0;
pub const CONTROL_PER_SEC: f64 = 5.0;

/// What the authority of a request becomes when the client's is not one.
const REPLACEMENT: &[u8] = b"localhost";

#[derive(Debug, PartialEq)]
enum Mode {
    /// Reading the 24-byte client preface.
    Preface,
    /// Parsing frames until the first header block tells which way to go.
    Sniff,
    /// Every header block is rewritten.
    Rewrite,
    /// The client's authority is fine: frames pass as they are.
    Scan,
    /// Not HTTP/2: bytes pass as they are, for the server to refuse.
    Raw,
}

/// A token bucket over the client's PING and SETTINGS frames.
struct ControlBudget {
    tokens: f64,
    at: std::time::Instant,
}

impl ControlBudget {
    fn new() -> Self {
        ControlBudget {
            tokens: CONTROL_BURST,
            at: std::time::Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * CONTROL_PER_SEC;
        self.tokens = (self.tokens + refill).min(CONTROL_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The client's bytes, parsed just enough to find header blocks.
struct Rewriter {
    mode: Mode,
    /// Bytes received and not yet consumed.
    input: Vec<u8>,
    /// Bytes ready for the HTTP/2 server.
    output: Vec<u8>,
    /// Payload bytes of the current non-header frame still to forward.
    forward: usize,
    /// A header block being collected across HEADERS and CONTINUATION
    /// frames: its original frames (forwarded as they were in sniff mode when
    /// the authority is fine), the HEADERS frame's stream, flags and
    /// priority, and the fragment so far.
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    control: ControlBudget,
    /// In scan mode, the bytes of a frame header split across reads.
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Set once the first rewritten authority was logged.
    logged: bool,
}

struct Block {
    raw: Vec<u8>,
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Rewriter {
    fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Rewriter {
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            forward: 0,
            block: None,
            decoder,
            control: ControlBudget::new(),
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            logged: false,
        }
    }

    /// Consumes as much of `input` as can be decided now.
    fn process(&mut self) -> io::Result<()> {
        loop {
            if self.mode == Mode::Raw {
                self.output.append(&mut self.input);
                return Ok(());
            }
            if self.mode == Mode::Scan {
                let input = std::mem::take(&mut self.input);
                self.scan(&input)?;
                self.output.extend_from_slice(&input);
                return Ok(());
            }
            if self.forward > 0 {
                let n = self.forward.min(self.input.len());
                if n == 0 {
                    return Ok(());
                }
                self.output.extend(self.input.drain(..n));
                self.forward -= n;
                continue;
            }
            if self.mode == Mode::Preface {
                if self.input.len() < PREFACE.len() {
                    if !PREFACE.starts_with(&self.input) {
                        // Not HTTP/2: let the server say so.
                        self.mode = Mode::Raw;
                        continue;
                    }
                    return Ok(());
                }
                if !self.input.starts_with(PREFACE) {
                    self.mode = Mode::Raw;
                    continue;
                }
                self.output.extend(self.input.drain(..PREFACE.len()));
                self.mode = Mode::Sniff;
                continue;
            }
            if self.input.len() < FRAME_HEADER_LEN {
                return Ok(());
            }
            let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
            let kind = self.input[3];
            let flags = self.input[4];
            let stream =
                u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]])
                    & 0x7fff_ffff;
            self.control_frame(kind, flags)?;
            let header_frame = kind == TYPE_HEADERS || kind == TYPE_CONTINUATION;
            if !header_frame {
                if self.block.is_some() {
                    return Err(invalid("a header block was interrupted by another frame"));
                }
                self.output.extend(self.input.drain(..FRAME_HEADER_LEN));
                self.forward = len;
                continue;
            }
            if len > MAX_FRAME {
                return Err(invalid(format!(
                    "a {len}-byte header frame exceeds the frame size"
                )));
            }
            if self.input.len() < FRAME_HEADER_LEN + len {
                return Ok(());
            }
            let frame: Vec<u8> = self.input.drain(..FRAME_HEADER_LEN + len).collect();
            self.header_frame(kind, flags, stream, frame)?;
        }
    }

    /// Scan mode: follows frame boundaries in bytes that pass unchanged
    /// (read straight into the server's buffer), counting control frames.
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.forward > 0 {
                let n = self.forward.min(bytes.len());
                bytes = &bytes[n..];
                self.forward -= n;
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let h = self.header;
                self.control_frame(h[3], h[4])?;
                self.forward = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            }
        }
        Ok(())
    }

    fn control_frame(&mut self, kind: u8, flags: u8) -> io::Result<()> {
        if (kind == TYPE_PING || kind == TYPE_SETTINGS)
            && flags & FLAG_ACK == 0
            && !self.control.take()
        {
            tracing::warn!("closing a gRPC connection that floods PING or SETTINGS frames");
            return Err(invalid("PING or SETTINGS flood"));
        }
        Ok(())
    }

    fn header_frame(&mut self, kind: u8, flags: u8, stream: u32, frame: Vec<u8>) -> io::Result<()> {
        let payload = &frame[FRAME_HEADER_LEN..];
        match (kind, self.block.as_mut()) {
            (TYPE_HEADERS, None) => {
                let mut p = payload;
                let mut pad = 0usize;
                if flags & FLAG_PADDED != 0 {
                    let (&n, rest) = p
                        .split_first()
                        .ok_or_else(|| invalid("empty padded HEADERS"))?;
                    pad = n as usize;
                    p = rest;
                }
                let mut priority = None;
                if flags & FLAG_PRIORITY != 0 {
                    if p.len() < 5 {
                        return Err(invalid("short HEADERS priority"));
                    }
                    let mut pr = [0u8; 5];
                    pr.copy_from_slice(&p[..5]);
                    priority = Some(pr);
                    p = &p[5..];
                }
                if pad > p.len() {
                    return Err(invalid("HEADERS padding longer than its frame"));
                }
                let fragment = p[..p.len() - pad].to_vec();
                let raw = if self.mode == Mode::Sniff {
                    frame.clone()
                } else {
                    Vec::new()
                };
                self.block = Some(Block {
                    raw,
                    stream,
                    flags,
                    priority,
                    fragment,
                });
            }
            (TYPE_CONTINUATION, Some(block)) if block.stream == stream => {
                if block.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(invalid("header block too large"));
                }
                block.fragment.extend_from_slice(payload);
                if self.mode == Mode::Sniff {
                    block.raw.extend_from_slice(&frame);
                }
            }
            _ => return Err(invalid("header frames out of order")),
        }
        if flags & FLAG_END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.end_block(block)?;
            }
        }
        Ok(())
    }

    fn end_block(&mut self, block: Block) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut total = 0usize;
        let mut too_big = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                // Decoded size is bounded too: indexed entries can repeat
                // table contents many times over.
                total += name.len() + value.len() + 32;
                if total > MAX_HEADER_BLOCK {
                    too_big = true;
                    return;
                }
                headers.push((name.into_owned(), value.into_owned()));
            })
            .map_err(|e| invalid(format!("HPACK: {e:?}")))?;
        if too_big {
            return Err(invalid("header list too large"));
        }
        let bad = headers.iter().position(|(n, v)| {
            n == b":authority" && http::uri::Authority::try_from(v.as_slice()).is_err()
        });
        if self.mode == Mode::Sniff {
            if bad.is_none() {
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::Scan;
                return Ok(());
            }
            self.mode = Mode::Rewrite;
        }
        if let Some(i) = bad {
            if !self.logged {
                self.logged = true;
                tracing::debug!(
                    authority = %String::from_utf8_lossy(&headers[i].1),
                    "client sent an authority that is no URI authority; read as localhost"
                );
            }
            headers[i].1 = REPLACEMENT.to_vec();
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &headers {
            encode_literal(name, value, &mut encoded);
        }
        self.write_block(
            block.stream,
            block.flags & FLAG_END_STREAM,
            block.priority,
            &encoded,
        );
        Ok(())
    }

    fn write_block(
        &mut self,
        stream: u32,
        end_stream: u8,
        priority: Option<[u8; 5]>,
        encoded: &[u8],
    ) {
        let first_room = MAX_FRAME - if priority.is_some() { 5 } else { 0 };
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = end_stream;
        if priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        let len = first.len() + if priority.is_some() { 5 } else { 0 };
        push_frame_header(&mut self.output, len, TYPE_HEADERS, flags, stream);
        if let Some(p) = priority {
            self.output.extend_from_slice(&p);
        }
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            push_frame_header(
                &mut self.output,
                chunk.len(),
                TYPE_CONTINUATION,
                flags,
                stream,
            );
            self.output.extend_from_slice(chunk);
            rest = tail;
        }
    }
}

fn push_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let l = (len as u32).to_be_bytes();
    out.extend_from_slice(&l[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// HPACK "literal header field without indexing, new name", no Huffman.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    for s in [name, value] {
        // A Vec never fails to take bytes.
        let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// An accepted connection whose client-to-server bytes pass through the
/// [`Rewriter`].
pub struct AuthorityFix<S> {
    inner: S,
    rw: Rewriter,
    /// Where in `rw.output` the next read starts.
    pos: usize,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rw: Rewriter::new(),
            pos: 0,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.rw.output.len() {
                let n = (this.rw.output.len() - this.pos).min(buf.remaining());
                buf.put_slice(&this.rw.output[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.rw.output.len() {
                    this.rw.output.clear();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Once the mode is settled, bytes go straight into the caller's
            // buffer: unexamined when not HTTP/2, scanned for frame
            // boundaries when the authority is fine.
            if this.rw.input.is_empty() {
                match this.rw.mode {
                    Mode::Raw => return Pin::new(&mut this.inner).poll_read(cx, buf),
                    Mode::Scan => {
                        let before = buf.filled().len();
                        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
                        if let Poll::Ready(Ok(())) = polled {
                            this.rw.scan(&buf.filled()[before..])?;
                        }
                        return polled;
                    }
                    _ => {}
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            if rb.filled().is_empty() {
                this.eof = true;
                // A partial frame at EOF goes to the server as it is, to
                // fail there.
                let rest = std::mem::take(&mut this.rw.input);
                this.rw.output.extend(rest);
                continue;
            }
            this.rw.input.extend_from_slice(rb.filled());
            if this.rw.input.len() > MAX_HEADER_BLOCK + READ_CHUNK + FRAME_HEADER_LEN {
                // Only a header frame is held back whole, and those are capped.
                return Poll::Ready(Err(invalid("client bytes held back beyond the header cap")));
            }
            this.rw.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_frame_header(&mut out, block.len(), TYPE_HEADERS, flags, stream);
        out.extend_from_slice(block);
        out
    }

    fn request(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/runtime.v1.RuntimeService/Version".to_vec(),
            ),
            (b":authority".to_vec(), authority.as_bytes().to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
        ]
    }

    fn encode_indexed(enc: &mut loona_hpack::Encoder, h: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        enc.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    /// Runs bytes through a rewriter in chunks of `step`.
    fn run(bytes: &[u8], step: usize) -> io::Result<Vec<u8>> {
        let mut rw = Rewriter::new();
        for chunk in bytes.chunks(step) {
            rw.input.extend_from_slice(chunk);
            rw.process()?;
        }
        Ok(rw.output)
    }

    /// Splits server-bound bytes back into (type, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        let mut b = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            out.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        out
    }

    #[test]
    fn a_valid_authority_passes_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        // A SETTINGS frame and a DATA frame around the request.
        push_frame_header(&mut bytes, 0, 0x4, 0, 0);
        bytes.extend(headers_frame(
            1,
            FLAG_END_HEADERS,
            &encode_indexed(&mut enc, &request("localhost")),
        ));
        push_frame_header(&mut bytes, 5, 0x0, FLAG_END_STREAM, 1);
        bytes.extend_from_slice(&[0, 0, 0, 0, 0]);
        for step in [1, 7, 4096] {
            assert_eq!(run(&bytes, step).unwrap(), bytes, "step {step}");
        }
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_on_every_request() {
        let mut enc = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        for stream in [1u32, 3, 5] {
            // The indexing encoder makes later requests refer to its table:
            // the rewriter must follow the client's table.
            let block = encode_indexed(&mut enc, &request("%2Frun%2Fgantry%2Fgantry.sock"));
            bytes.extend(headers_frame(
                stream,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                &block,
            ));
        }
        for step in [1, 13, 65536] {
            let out = run(&bytes, step).unwrap();
            let mut dec = loona_hpack::Decoder::new();
            let fs = frames(&out);
            assert_eq!(fs.len(), 3);
            for (i, (kind, flags, stream, payload)) in fs.into_iter().enumerate() {
                assert_eq!(kind, TYPE_HEADERS);
                assert_eq!(stream, 1 + 2 * i as u32);
                assert_eq!(flags, FLAG_END_HEADERS | FLAG_END_STREAM);
                let got = dec.decode(&payload).unwrap();
                assert_eq!(got, request("localhost"));
            }
        }
    }

    #[test]
    fn continuation_padding_and_priority_are_handled() {
        let mut enc = loona_hpack::Encoder::new();
        let block = encode_indexed(&mut enc, &request("/run/gantry/gantry.sock"));
        let (a, b) = block.split_at(block.len() / 2);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 0, 16]); // priority
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut bytes = PREFACE.to_vec();
        push_frame_header(
            &mut bytes,
            payload.len(),
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            1,
        );
        bytes.extend_from_slice(&payload);
        push_frame_header(&mut bytes, b.len(), TYPE_CONTINUATION, FLAG_END_HEADERS, 1);
        bytes.extend_from_slice(b);
        let out = run(&bytes, 5).unwrap();
        let fs = frames(&out);
        assert_eq!(fs.len(), 1);
        let (kind, flags, _, payload) = &fs[0];
        assert_eq!(*kind, TYPE_HEADERS);
        assert_eq!(*flags, FLAG_END_HEADERS | FLAG_PRIORITY);
        assert_eq!(&payload[..5], &[0x80, 0, 0, 0, 16]);
        let got = loona_hpack::Decoder::new().decode(&payload[5..]).unwrap();
        assert_eq!(got, request("localhost"));
    }

    #[test]
    fn large_rewritten_blocks_are_split_into_continuations() {
        let mut h = request("/a/b.sock");
        h.push((b"x-big".to_vec(), vec![b'v'; 20_000]));
        let mut enc = loona_hpack::Encoder::new();
        let block = encode_indexed(&mut enc, &h);
        let mut bytes = PREFACE.to_vec();
        let (a, b) = block.split_at(MAX_FRAME);
        bytes.extend(headers_frame(1, 0, a));
        push_frame_header(&mut bytes, b.len(), TYPE_CONTINUATION, FLAG_END_HEADERS, 1);
        bytes.extend_from_slice(b);
        let fs = frames(&run(&bytes, 1000).unwrap());
        assert_eq!(fs.len(), 2);
        assert_eq!((fs[0].0, fs[0].1), (TYPE_HEADERS, 0));
        assert_eq!((fs[1].0, fs[1].1), (TYPE_CONTINUATION, FLAG_END_HEADERS));
        assert!(fs.iter().all(|f| f.3.len() <= MAX_FRAME));
        let joined: Vec<u8> = fs.iter().flat_map(|f| f.3.clone()).collect();
        h[3].1 = b"localhost".to_vec();
        assert_eq!(loona_hpack::Decoder::new().decode(&joined).unwrap(), h);
    }

    #[test]
    fn hostile_header_blocks_are_refused() {
        // Continuations without end past the cap.
        let mut bytes = PREFACE.to_vec();
        bytes.extend(headers_frame(1, 0, &[0x82]));
        for _ in 0..(MAX_HEADER_BLOCK / MAX_FRAME + 2) {
            push_frame_header(&mut bytes, MAX_FRAME, TYPE_CONTINUATION, 0, 1);
            bytes.extend(std::iter::repeat_n(0x82, MAX_FRAME));
        }
        assert!(run(&bytes, 65536).is_err());
        // A frame larger than the frame size.
        let mut bytes = PREFACE.to_vec();
        push_frame_header(&mut bytes, MAX_FRAME + 1, TYPE_HEADERS, FLAG_END_HEADERS, 1);
        assert!(run(&bytes, 64).is_err());
        // A continuation for another stream, and garbage HPACK.
        let mut bytes = PREFACE.to_vec();
        bytes.extend(headers_frame(1, 0, &[0x82]));
        push_frame_header(&mut bytes, 1, TYPE_CONTINUATION, FLAG_END_HEADERS, 3);
        bytes.push(0x82);
        assert!(run(&bytes, 64).is_err());
        let mut bytes = PREFACE.to_vec();
        bytes.extend(headers_frame(
            1,
            FLAG_END_HEADERS,
            &[0xff, 0xff, 0xff, 0xff],
        ));
        assert!(run(&bytes, 64).is_err());
        // Indexed fields that expand a small block into a huge list.
        let mut enc = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        let mut big = request("/run/x.sock");
        big.push((b"x-a".to_vec(), vec![b'a'; 3000]));
        bytes.extend(headers_frame(
            1,
            FLAG_END_HEADERS,
            &encode_indexed(&mut enc, &big),
        ));
        let repeated: Vec<u8> = std::iter::repeat_n(0xbe, MAX_FRAME).collect(); // index 62
        bytes.extend(headers_frame(3, FLAG_END_HEADERS, &repeated));
        assert!(run(&bytes, 65536).is_err());
    }

    #[test]
    fn a_ping_flood_closes_the_connection() {
        let mut bytes = PREFACE.to_vec();
        // Acknowledgements cost the server nothing and are not counted.
        for _ in 0..200 {
            push_frame_header(&mut bytes, 8, TYPE_PING, FLAG_ACK, 0);
            bytes.extend_from_slice(&[0; 8]);
        }
        assert!(run(&bytes, 4096).is_ok());
        for _ in 0..(CONTROL_BURST as usize + 1) {
            push_frame_header(&mut bytes, 8, TYPE_PING, 0, 0);
            bytes.extend_from_slice(&[0; 8]);
        }
        let err = run(&bytes, 4096).unwrap_err();
        assert!(err.to_string().contains("flood"), "{err}");

        // After a request with a fine authority, frames are only scanned:
        // the flood is still seen, whatever the read sizes.
        let mut enc = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(headers_frame(
            1,
            FLAG_END_HEADERS,
            &encode_indexed(&mut enc, &request("localhost")),
        ));
        push_frame_header(&mut bytes, 3, 0x0, FLAG_END_STREAM, 1);
        bytes.extend_from_slice(&[1, 2, 3]);
        let fine = bytes.clone();
        for _ in 0..(CONTROL_BURST as usize + 1) {
            push_frame_header(&mut bytes, 8, TYPE_PING, 0, 0);
            bytes.extend_from_slice(&[0x6; 8]);
        }
        for step in [1, 5, 9, 4096] {
            assert_eq!(run(&fine, step).unwrap(), fine);
            assert!(run(&bytes, step).is_err(), "step {step}");
        }
    }

    #[test]
    fn not_http2_passes_untouched() {
        let bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(run(&bytes, 3).unwrap(), bytes);
    }
}
