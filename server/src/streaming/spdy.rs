//! SPDY/3.1 framing and a server-side connection, enough for the
//! Kubernetes streaming protocols (remotecommand and port forward) that
//! kubelet, crictl and client-go speak over it.
//!
//! Written here because no maintained Rust crate implements SPDY. The
//! subset is what the Go peers (moby/spdystream) use: SYN_STREAM,
//! SYN_REPLY, DATA, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS and
//! WINDOW_UPDATE frames, with header blocks compressed by one zlib stream
//! per direction primed with the spec's dictionary. spdystream does not
//! implement flow control, so neither side here blocks on windows:
//! WINDOW_UPDATE frames are read and ignored, and backpressure comes from
//! TCP alone.
//!
//! Only the client opens streams; the server replies to each and then
//! exchanges data on it, as the streaming protocols require.

use std::collections::HashMap;
use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: the stream was cancelled.
pub const CANCEL: u32 = 5;
/// Frames larger than this are refused (SPDY's length field allows 16 MiB).
const MAX_FRAME: usize = 1 << 24;

pub type HeaderList = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        flags: u8,
        headers: HeaderList,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: HeaderList,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings(Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: HeaderList,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type this module does not use; skipped.
    Other(u16),
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    #[error("SPDY header compression: {0}")]
    Zlib(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The header compression dictionary of SPDY/3 (draft 3, section 2.6.10.1):
/// length-prefixed common header names and values, then common strings.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found",
            "500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1424);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Encodes and decodes frames; owns the two header compression streams,
/// so one codec serves one connection.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream.
        let _ = deflate.set_dictionary(dictionary());
        Codec {
            deflate,
            inflate: Decompress::new(true),
        }
    }

    fn compress(&mut self, headers: &HeaderList) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            // SPDY/3 header names are lowercase; Go's framer rejects others.
            let k = k.to_ascii_lowercase();
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            pos += (self.deflate.total_in() - before) as usize;
            // Done when all input is in and the flush left spare room.
            if pos >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn decompress(&mut self, input: &[u8]) -> Result<HeaderList, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.inflate.total_in();
            let before_out = out.len();
            let mut asked_dictionary = false;
            match self
                .inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            {
                // A connection's header stream is only ever flushed, never
                // finished: an end is a client's doing, and what follows
                // it could never be read (the loop would spin on it).
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::Zlib(
                        "the header compression stream was ended".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                    asked_dictionary = true;
                }
                Err(e) => return Err(SpdyError::Zlib(e.to_string())),
            }
            pos += (self.inflate.total_in() - before) as usize;
            if out.len() > 1 << 20 {
                return Err(SpdyError::Protocol("header block over 1 MiB".into()));
            }
            if pos >= input.len() && out.len() < out.capacity() {
                break;
            }
            if !asked_dictionary && self.inflate.total_in() == before && out.len() == before_out {
                if pos >= input.len() {
                    break;
                }
                return Err(SpdyError::Zlib("the header block makes no progress".into()));
            }
        }
        parse_header_block(&out)
    }

    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let (ty, flags, payload) = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                return Ok(out);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                flags,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&stream_id.to_be_bytes());
                p.extend_from_slice(&associated_to.to_be_bytes());
                p.extend_from_slice(&[0, 0]);
                p.extend(self.compress(headers)?);
                (SYN_STREAM, *flags, p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.compress(headers)?);
                (SYN_REPLY, *flags, p)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.compress(headers)?);
                (HEADERS, *flags, p)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                (RST_STREAM, 0, p)
            }
            Frame::Settings(entries) => {
                let mut p = (entries.len() as u32).to_be_bytes().to_vec();
                for (f, id, v) in entries {
                    p.push(*f);
                    p.extend_from_slice(&id.to_be_bytes()[1..]);
                    p.extend_from_slice(&v.to_be_bytes());
                }
                (SETTINGS, 0, p)
            }
            Frame::Ping(id) => (PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => {
                let mut p = last_good.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                (GOAWAY, 0, p)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&delta.to_be_bytes());
                (WINDOW_UPDATE, 0, p)
            }
            Frame::Other(ty) => {
                return Err(SpdyError::Protocol(format!("cannot encode type {ty}")))
            }
        };
        let mut out = Vec::with_capacity(8 + payload.len());
        out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        out.extend_from_slice(&ty.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend(payload);
        Ok(out)
    }

    /// Takes one whole frame off the front of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::Protocol(format!("frame of {len} bytes")));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let flags = buf[4];
        let head: [u8; 4] = [buf[0], buf[1], buf[2], buf[3]];
        let payload: Vec<u8> = buf.drain(..8 + len).skip(8).collect();
        let word = |at: usize| -> Result<u32, SpdyError> {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| SpdyError::Protocol("short control frame".into()))
        };
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: u32::from_be_bytes(head) & 0x7fff_ffff,
                flags,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Protocol(format!("SPDY version {version}")));
        }
        let ty = u16::from_be_bytes([head[2], head[3]]);
        Ok(Some(match ty {
            SYN_STREAM => {
                let stream_id = word(0)? & 0x7fff_ffff;
                let associated_to = word(4)? & 0x7fff_ffff;
                let block = payload
                    .get(10..)
                    .ok_or_else(|| SpdyError::Protocol("short SYN_STREAM".into()))?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    flags,
                    headers: self.decompress(block)?,
                }
            }
            SYN_REPLY => Frame::SynReply {
                stream_id: word(0)? & 0x7fff_ffff,
                flags,
                headers: self.decompress(&payload[4..])?,
            },
            HEADERS => Frame::Headers {
                stream_id: word(0)? & 0x7fff_ffff,
                flags,
                headers: self.decompress(&payload[4..])?,
            },
            RST_STREAM => Frame::RstStream {
                stream_id: word(0)? & 0x7fff_ffff,
                status: word(4)?,
            },
            SETTINGS => {
                let n = word(0)? as usize;
                let mut entries = Vec::new();
                for i in 0..n.min(64) {
                    let at = 4 + i * 8;
                    let id = word(at)?;
                    entries.push(((id >> 24) as u8, id & 0xff_ffff, word(at + 4)?));
                }
                Frame::Settings(entries)
            }
            PING => Frame::Ping(word(0)?),
            GOAWAY => Frame::GoAway {
                last_good: word(0)? & 0x7fff_ffff,
                status: word(4).unwrap_or(0),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream_id: word(0)? & 0x7fff_ffff,
                delta: word(4)? & 0x7fff_ffff,
            },
            other => Frame::Other(other),
        }))
    }
}

fn parse_header_block(b: &[u8]) -> Result<HeaderList, SpdyError> {
    let short = || SpdyError::Protocol("truncated header block".into());
    let mut at = 0usize;
    let word = |at: &mut usize| -> Result<usize, SpdyError> {
        let w = b.get(*at..*at + 4).ok_or_else(short)?;
        *at += 4;
        Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize)
    };
    let n = word(&mut at)?;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let kl = word(&mut at)?;
        let k = b.get(at..at + kl).ok_or_else(short)?;
        at += kl;
        let vl = word(&mut at)?;
        let v = b.get(at..at + vl).ok_or_else(short)?;
        at += vl;
        out.push((
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(out)
}

/// A stream the client opened: its headers, the data the client sends on
/// it (the receiver ends when the client half-closes or resets it), and a
/// handle to send data back.
pub struct IncomingStream {
    pub headers: HeaderList,
    pub data: mpsc::Receiver<Vec<u8>>,
    pub writer: StreamWriter,
}

impl IncomingStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Out {
    Frame(Frame),
    Close,
}

/// Sends data on one stream. Cloneable; dropping does not close the stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Queues `data`; fails once the connection is gone.
    pub async fn send(&self, data: Vec<u8>) -> Result<(), SpdyError> {
        // Frames stay well under the limit the peer's reader accepts.
        for chunk in data.chunks(32 * 1024) {
            self.tx
                .send(Out::Frame(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: chunk.to_vec(),
                }))
                .await
                .map_err(|_| gone())?;
        }
        Ok(())
    }

    /// Half-closes the stream from our side.
    pub async fn finish(&self) {
        let _ = self
            .tx
            .send(Out::Frame(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Vec::new(),
            }))
            .await;
    }

    pub async fn reset(&self) {
        let _ = self
            .tx
            .send(Out::Frame(Frame::RstStream {
                stream_id: self.id,
                status: CANCEL,
            }))
            .await;
    }
}

fn gone() -> SpdyError {
    SpdyError::Io(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "SPDY connection closed",
    ))
}

/// The server end of one SPDY connection.
pub struct Connection {
    /// Streams as the client opens them; ends when the connection does.
    pub streams: mpsc::Receiver<IncomingStream>,
    /// Becomes true when the connection is gone (closed, reset, broken).
    pub closed: watch::Receiver<bool>,
    /// Touched by every frame either way.
    pub activity: super::Activity,
    out: mpsc::Sender<Out>,
}

impl Connection {
    /// Starts serving SPDY on `io`: a reader task and a writer task.
    pub fn serve<IO>(io: IO) -> Connection
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel::<Out>(64);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let (closed_tx, closed_rx) = watch::channel(false);
        let closed_tx = std::sync::Arc::new(closed_tx);
        let codec = std::sync::Arc::new(std::sync::Mutex::new(Codec::new()));
        let activity = super::Activity::default();
        tokio::spawn(write_loop(
            wr,
            out_rx,
            codec.clone(),
            closed_tx.clone(),
            activity.clone(),
        ));
        tokio::spawn(read_loop(
            rd,
            out_tx.clone(),
            streams_tx,
            codec,
            closed_tx,
            activity.clone(),
        ));
        Connection {
            streams: streams_rx,
            closed: closed_rx,
            activity,
            out: out_tx,
        }
    }

    /// Flushes what was queued and closes the connection.
    pub async fn close(&self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good: 0,
                status: 0,
            }))
            .await;
        let _ = self.out.send(Out::Close).await;
    }
}

async fn write_loop<W: AsyncWrite>(
    wr: W,
    mut rx: mpsc::Receiver<Out>,
    codec: std::sync::Arc<std::sync::Mutex<Codec>>,
    closed: std::sync::Arc<watch::Sender<bool>>,
    activity: super::Activity,
) {
    let mut wr = Box::pin(wr);
    while let Some(out) = rx.recv().await {
        activity.touch();
        let bytes = match out {
            Out::Close => break,
            Out::Frame(f) => {
                let encoded = codec.lock().unwrap_or_else(|p| p.into_inner()).encode(&f);
                match encoded {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!(error = %e, "SPDY frame not encodable");
                        continue;
                    }
                }
            }
        };
        if wr.write_all(&bytes).await.is_err() {
            break;
        }
        // Batch what is already queued into one flush.
        if rx.is_empty() && wr.flush().await.is_err() {
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    let _ = closed.send(true);
}

async fn read_loop<R: AsyncRead>(
    rd: R,
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<IncomingStream>,
    codec: std::sync::Arc<std::sync::Mutex<Codec>>,
    closed: std::sync::Arc<watch::Sender<bool>>,
    activity: super::Activity,
) {
    let mut rd = Box::pin(rd);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    'conn: loop {
        loop {
            let frame = codec
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .decode(&mut buf);
            let frame = match frame {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "closing SPDY connection");
                    break 'conn;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    let (tx, rx) = mpsc::channel(32);
                    let writer = StreamWriter {
                        id: stream_id,
                        tx: out.clone(),
                    };
                    let reply = Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    };
                    if out.send(Out::Frame(reply)).await.is_err() {
                        break 'conn;
                    }
                    if flags & FLAG_FIN == 0 {
                        open.insert(stream_id, tx);
                    }
                    let s = IncomingStream {
                        headers,
                        data: rx,
                        writer,
                    };
                    if streams.send(s).await.is_err() {
                        let _ = out
                            .send(Out::Frame(Frame::RstStream {
                                stream_id,
                                status: CANCEL,
                            }))
                            .await;
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    if let Some(tx) = open.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            // The handler stopped reading this stream.
                            open.remove(&stream_id);
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Frame::Headers {
                    stream_id, flags, ..
                } if flags & FLAG_FIN != 0 => {
                    open.remove(&stream_id);
                }
                Frame::RstStream { stream_id, .. } => {
                    open.remove(&stream_id);
                }
                Frame::Ping(id) => {
                    let _ = out.send(Out::Frame(Frame::Ping(id))).await;
                }
                Frame::GoAway { .. } => break 'conn,
                _ => {}
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                activity.touch();
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    drop(open);
    let _ = closed.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn the_dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(d)),
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    /// The bytes of a SYN_STREAM for a stdout stream as written by
    /// moby/spdystream's framer (the one client-go and crictl use), with
    /// Go's zlib and its copy of the dictionary: the interoperability
    /// check a self round trip cannot give.
    const RECORDED_SYN_STREAM: &str = include_str!("testdata/syn_stream_stdout.hex");

    #[test]
    fn a_recorded_go_client_frame_decodes() {
        let mut buf = hex::decode(RECORDED_SYN_STREAM.trim()).unwrap();
        let mut codec = Codec::new();
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        let Frame::SynStream {
            stream_id, headers, ..
        } = frame
        else {
            panic!("not a SYN_STREAM: {frame:?}");
        };
        assert_eq!(stream_id, 3);
        assert_eq!(
            headers,
            vec![("streamtype".to_string(), "stdout".to_string())]
        );
    }

    #[test]
    fn frames_round_trip_through_two_codecs() {
        let mut client = Codec::new();
        let mut server = Codec::new();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "stdout".into()),
                    ("port".into(), "8080".into()),
                ],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Ping(7),
            Frame::RstStream {
                stream_id: 1,
                status: CANCEL,
            },
            Frame::Settings(vec![(0, 4, 1000)]),
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 4096,
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(client.encode(f).unwrap());
        }
        // Fed a byte at a time, frames come out whole and in order.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = server.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut codec = Codec::new();
        let mut buf = vec![0x80, 0x02, 0x00, 0x01, 0, 0, 0, 4, 1, 2, 3, 4];
        assert!(codec.decode(&mut buf).is_err(), "wrong version");
        let mut buf = vec![
            0x80, 0x03, 0x00, 0x01, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 9,
        ];
        assert!(codec.decode(&mut buf).is_err(), "bad zlib");
        let mut buf = vec![0x80, 0x03, 0x00, 0x06, 0, 0, 0, 2, 0, 0];
        assert!(codec.decode(&mut buf).is_err(), "short PING");
    }

    #[tokio::test]
    async fn a_connection_replies_to_streams_and_carries_data_both_ways() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut conn = Connection::serve(server_io);
        let (mut crd, mut cwr) = tokio::io::split(client_io);
        let mut client = Codec::new();
        let mut wire = client
            .encode(&Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            })
            .unwrap();
        wire.extend(
            client
                .encode(&Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: b"to server".to_vec(),
                })
                .unwrap(),
        );
        wire.extend(client.encode(&Frame::Ping(42)).unwrap());
        cwr.write_all(&wire).await.unwrap();

        let mut s = conn.streams.recv().await.unwrap();
        assert_eq!(s.header("streamtype"), Some("stdin"));
        assert_eq!(s.data.recv().await.unwrap(), b"to server");
        assert!(s.data.recv().await.is_none(), "FIN ends the stream's data");
        s.writer.send(b"to client".to_vec()).await.unwrap();
        s.writer.finish().await;
        conn.close().await;

        let mut buf = Vec::new();
        crd.read_to_end(&mut buf).await.unwrap();
        let mut got = Vec::new();
        while let Some(f) = client.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert!(
            matches!(got[0], Frame::SynReply { stream_id: 1, .. }),
            "{got:?}"
        );
        assert!(got.contains(&Frame::Ping(42)));
        assert!(got.contains(&Frame::Data {
            stream_id: 1,
            flags: 0,
            data: b"to client".to_vec()
        }));
        assert!(got.contains(&Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: vec![]
        }));
        assert!(matches!(got.last(), Some(Frame::GoAway { .. })));
        assert!(*conn.closed.borrow());
    }
}
