//! What passes between the daemon and a monitor over the monitor's attach
//! socket (framed I/O), and the descriptor handover OCI runtimes and
//! gantry-exec use for a terminal's master.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// Frames between the daemon and a monitor's attach socket: one kind byte,
/// a big-endian u32 length, the payload.
pub mod attach_wire {
    /// Monitor → daemon: container output.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// Daemon → monitor.
    pub const STDIN: u8 = 0;
    /// The attached client closed its stdin.
    pub const STDIN_CLOSE: u8 = 3;
    /// Payload: width then height, big-endian u16s.
    pub const RESIZE: u8 = 4;

    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Splits whole frames off the front of `buf`.
    pub fn decode(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while buf.len() - at >= 5 {
            let len =
                u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
            if buf.len() - at - 5 < len {
                break;
            }
            out.push((buf[at], buf[at + 5..at + 5 + len].to_vec()));
            at += 5 + len;
        }
        buf.drain(..at);
        out
    }
}

/// Receives one file descriptor sent with `SCM_RIGHTS` on `sock` (how OCI
/// runtimes hand over a terminal's master on their `--console-socket`).
pub fn recv_fd(sock: impl AsFd) -> io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    rustix::net::recvmsg(sock, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC)?;
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor on the console socket",
    ))
}

#[cfg(test)]
mod tests {
    use super::attach_wire::*;

    #[test]
    fn attach_frames_round_trip_across_partial_reads() {
        let mut wire = encode(STDOUT, b"hello");
        wire.extend(encode(RESIZE, &[0, 80, 0, 24]));
        wire.extend(encode(STDIN_CLOSE, b""));
        let mut buf = wire[..7].to_vec();
        assert!(decode(&mut buf).is_empty(), "a partial frame waits");
        buf.extend_from_slice(&wire[7..]);
        let frames = decode(&mut buf);
        assert_eq!(
            frames,
            vec![
                (STDOUT, b"hello".to_vec()),
                (RESIZE, vec![0, 80, 0, 24]),
                (STDIN_CLOSE, vec![])
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn a_terminal_passed_over_a_socket_is_received() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let sender = std::thread::spawn(move || {
            let s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let f = std::fs::File::open("/dev/null").unwrap();
            use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
            let mut space =
                [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut cmsg = SendAncillaryBuffer::new(&mut space);
            let fds = [std::os::fd::AsFd::as_fd(&f)];
            assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
            rustix::net::sendmsg(
                &s,
                &[std::io::IoSlice::new(b"x")],
                &mut cmsg,
                SendFlags::empty(),
            )
            .unwrap();
        });
        let (conn, _) = listener.accept().unwrap();
        let fd = super::recv_fd(&conn).unwrap();
        sender.join().unwrap();
        let link = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap();
        assert_eq!(link, std::path::Path::new("/dev/null"));
    }
}
