//! The channel between the two processes: one UNIX stream socket pair, non-blocking on
//! both ends, with a queue of outgoing frames and a buffer of incoming bytes.
//!
//! Neither process ever blocks on the other: messages are queued and written when the
//! socket takes them, and each loop polls for writability while its queue is not
//! empty. Two processes that each waited for the other to read would otherwise deadlock
//! when both socket buffers fill at once (a bulk update in one direction while the
//! table's changes flow in the other).
//!
//! Each loop takes at most [`TURN_BUDGET`] bytes of frames per turn, so a backlog
//! never holds up the loop's timers (the next turn then does not wait on the socket).
//!
//! Backpressure is by the queue's size ([`HIGH_WATER`]): the parent stops reading the
//! sync link while the engine has not taken what was already forwarded (so a flood
//! stays in the kernel's socket buffer and is dropped and counted there, as without
//! privilege separation), and the engine stops reading the parent while the parent has
//! not taken its table operations. The parent always reads the engine, so the two
//! never wait on each other at once.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::message::{MessageError, FRAME_HEADER, MAX_BODY};

/// Queued bytes above which the sender stops producing more (see the module doc).
pub const HIGH_WATER: usize = 4 << 20;
/// Bytes of frames a loop takes per turn before it serves its timers, the link and the
/// control socket again: a 2 MB backlog of packets to send takes tens of milliseconds,
/// a turn should take about one.
pub const TURN_BUDGET: usize = 32 << 10;
/// Socket buffer asked for each direction. Small: what waits in it is what a message
/// sent now waits behind (an ACK of the compact bulk behind the table operations of
/// the frames before it). With 4 MiB, some 50 000 operations, the ACKs came back 40 ms
/// late and more, the sender's window stayed shut and a bulk of a million states
/// took 1.85 s; with 256 KiB, 1.2 s. The queue ([`HIGH_WATER`]) holds what does not fit.
const SOCKET_BUFFER: usize = 256 << 10;
/// The receive buffer: the longest frame fits with room to spare, so a partial frame
/// moved to the front can always complete (allocated and zeroed once).
const IN_BUFFER: usize = 2 * LONGEST_FRAME;
/// A frame of the longest body, header included.
const LONGEST_FRAME: usize = MAX_BODY + FRAME_HEADER;

/// Why the channel stopped working.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The other process closed its end (exited).
    #[error("the other process closed the channel")]
    Closed,
    /// A frame that does not decode.
    #[error("bad message from the other process: {0}")]
    Message(#[from] MessageError),
    /// The socket failed.
    #[error("channel: {0}")]
    Io(#[from] io::Error),
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    /// Frames waiting to be written; `sent` bytes of them already are.
    out: Vec<u8>,
    sent: usize,
    /// Bytes read: `taken..filled` are not yet taken as frames.
    inbuf: Vec<u8>,
    taken: usize,
    filled: usize,
    closed: bool,
    /// Bytes [`fill`](Channel::fill) moved to the buffer's front, for the tests.
    #[cfg(test)]
    moved: u64,
}

/// The two ends of a new channel.
pub fn pair() -> io::Result<(Channel, Channel)> {
    let (a, b) = UnixStream::pair()?;
    Ok((Channel::new(a)?, Channel::new(b)?))
}

impl Channel {
    /// Wraps one end of a stream socket pair.
    pub fn new(stream: UnixStream) -> io::Result<Channel> {
        stream.set_nonblocking(true)?;
        let sock = socket2::SockRef::from(&stream);
        // Bigger buffers mean fewer wakeups; the kernel may cap them, which is fine.
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        Ok(Channel {
            stream,
            out: Vec::new(),
            sent: 0,
            inbuf: vec![0; IN_BUFFER],
            taken: 0,
            filled: 0,
            closed: false,
            #[cfg(test)]
            moved: 0,
        })
    }

    /// The queue frames are encoded into (`ToEngine::encode(&mut ch.queue())`).
    pub fn queue(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Whether the loop should poll for writability.
    pub fn wants_write(&self) -> bool {
        self.queued() > 0
    }

    /// Writes as much of the queue as the socket takes now.
    pub fn flush(&mut self) -> Result<(), ChannelError> {
        while self.sent < self.out.len() {
            match (&self.stream).write(&self.out[self.sent..]) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_gone(&e) => return Err(ChannelError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            // A burst (a million local changes at once) leaves its memory to the
            // allocator, not to the queue's capacity for the daemon's life.
            if self.out.capacity() > 2 * HIGH_WATER {
                self.out.shrink_to(HIGH_WATER);
            }
        } else if self.sent > self.out.len() / 2 {
            // Keep the queue from growing by what was already written.
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    /// Writes the whole queue, waiting for the socket for at most `timeout` (on the way
    /// out, when nothing else is left to do).
    pub fn flush_all(&mut self, timeout: Duration) -> Result<(), ChannelError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.flush()?;
            if self.queued() == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::from(io::ErrorKind::TimedOut).into());
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [nix::poll::PollFd::new(
                self.stream.as_fd(),
                nix::poll::PollFlags::POLLOUT,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        }
    }

    /// Reads what the socket holds (as much as the buffer takes). `Closed` once the
    /// other end is gone and every frame before that has been taken.
    pub fn fill(&mut self) -> Result<(), ChannelError> {
        if self.closed {
            return Err(ChannelError::Closed);
        }
        if self.taken == self.filled {
            self.taken = 0;
            self.filled = 0;
        } else if self.inbuf.len() - self.taken < LONGEST_FRAME {
            // What is left moves to the front only when the frame starting there might
            // not fit behind it: a reader that takes a few frames a turn (its budget)
            // would otherwise move the megabytes it left at every read (a bulk's import
            // spent a tenth of the engine's time moving them). So each byte moves at
            // most once, and the buffer (two longest frames) still holds any frame whole.
            self.inbuf.copy_within(self.taken..self.filled, 0);
            #[cfg(test)]
            {
                self.moved += (self.filled - self.taken) as u64;
            }
            self.filled -= self.taken;
            self.taken = 0;
        }
        while self.filled < self.inbuf.len() {
            match (&self.stream).read(&mut self.inbuf[self.filled..]) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_gone(&e) => {
                    self.closed = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The next whole frame read, as (kind, body); `None` when the rest has not arrived.
    /// An over-long length is an error: the stream cannot be trusted past it.
    pub fn next_frame(&mut self) -> Result<Option<(u8, &[u8])>, ChannelError> {
        let rest = &self.inbuf[self.taken..self.filled];
        if rest.len() < FRAME_HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_BODY {
            return Err(MessageError::TooLong(len).into());
        }
        if rest.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        let kind = rest[4];
        let start = self.taken + FRAME_HEADER;
        self.taken = start + len;
        Ok(Some((kind, &self.inbuf[start..start + len])))
    }

    /// [`next_frame`](Self::next_frame) while `budget` lasts: each frame taken costs its
    /// bytes, and none is taken once the budget is spent (the rest waits for the next
    /// turn, see [`TURN_BUDGET`]).
    pub fn next_frame_in(
        &mut self,
        budget: &mut usize,
    ) -> Result<Option<(u8, &[u8])>, ChannelError> {
        if *budget == 0 {
            return Ok(None);
        }
        let frame = self.next_frame()?;
        if let Some((_, body)) = &frame {
            *budget = budget.saturating_sub(FRAME_HEADER + body.len());
        }
        Ok(frame)
    }

    /// A whole frame is buffered and not taken yet (a loop that stopped for its turn's
    /// budget must not sleep on the socket then).
    pub fn has_frame(&self) -> bool {
        let rest = &self.inbuf[self.taken..self.filled];
        rest.len() >= FRAME_HEADER
            && rest.len()
                >= FRAME_HEADER + u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize
    }

    /// The other end closed and every frame it sent was taken.
    pub fn is_closed(&self) -> bool {
        self.closed && self.filled - self.taken < FRAME_HEADER
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::super::message::{ToEngine, ToParent};
    use super::*;

    #[test]
    fn frames_cross_in_order_and_in_any_number() {
        let (mut a, mut b) = pair().unwrap();
        let payload = vec![0x5a; 1400];
        let mut sent = 0u32;
        let mut got = 0u32;
        let mut transmit_next = false;
        // More than both socket buffers hold: the sender must keep its queue and the
        // receiver must take partial frames.
        while got < 20_000 {
            while sent < 20_000 && a.queued() < HIGH_WATER {
                ToEngine::SendFailed(sent).encode(a.queue());
                ToParent::Transmit(&payload).encode(a.queue());
                sent += 1;
            }
            a.flush().unwrap();
            b.fill().unwrap();
            while let Some((kind, body)) = b.next_frame().unwrap() {
                if transmit_next {
                    assert_eq!(
                        ToParent::decode(kind, body).unwrap(),
                        ToParent::Transmit(&payload)
                    );
                    got += 1;
                } else {
                    assert_eq!(
                        ToEngine::decode(kind, body).unwrap(),
                        ToEngine::SendFailed(got)
                    );
                }
                transmit_next = !transmit_next;
            }
        }
        assert_eq!(a.queued(), 0);
    }

    #[test]
    fn a_reader_taking_a_few_frames_a_read_moves_each_byte_at_most_once() {
        let (mut a, mut b) = pair().unwrap();
        let payload = vec![0x33; 9000];
        let frames = 2000;
        let (mut sent, mut got) = (0, 0);
        let mut delivered = 0u64;
        while got < frames {
            while sent < frames && a.queued() < HIGH_WATER {
                ToParent::Transmit(&payload).encode(a.queue());
                sent += 1;
            }
            a.flush().unwrap();
            b.fill().unwrap();
            // Two frames a turn, as a reader whose budget is spent leaves the rest.
            for _ in 0..2 {
                if let Some((kind, body)) = b.next_frame().unwrap() {
                    assert_eq!(
                        ToParent::decode(kind, body).unwrap(),
                        ToParent::Transmit(&payload)
                    );
                    delivered += (FRAME_HEADER + body.len()) as u64;
                    got += 1;
                }
            }
        }
        assert!(
            b.moved <= delivered,
            "moved {} bytes to deliver {delivered}",
            b.moved
        );
    }

    #[test]
    fn a_closed_end_is_seen_after_its_last_frame() {
        let (mut a, mut b) = pair().unwrap();
        ToParent::Done.encode(a.queue());
        a.flush_all(Duration::from_secs(1)).unwrap();
        drop(a);
        b.fill().unwrap();
        let (kind, body) = b.next_frame().unwrap().unwrap();
        assert_eq!(ToParent::decode(kind, body).unwrap(), ToParent::Done);
        assert!(b.is_closed());
        assert!(matches!(b.fill(), Err(ChannelError::Closed)));
        // Writing to it says closed, not a raw EPIPE.
        ToParent::Done.encode(b.queue());
        assert!(matches!(b.flush(), Err(ChannelError::Closed)));
    }

    #[test]
    fn frames_left_for_the_next_turn_are_seen() {
        let (mut a, mut b) = pair().unwrap();
        ToParent::Done.encode(a.queue());
        ToParent::Done.encode(a.queue());
        // Half a third frame: not a whole one.
        ToParent::Transmit(&[1, 2, 3, 4]).encode(a.queue());
        let whole = a.queued();
        a.out.truncate(whole - 3);
        a.flush().unwrap();
        b.fill().unwrap();
        assert!(b.has_frame());
        b.next_frame().unwrap().unwrap();
        assert!(b.has_frame(), "one whole frame left");
        b.next_frame().unwrap().unwrap();
        assert!(!b.has_frame(), "only part of a frame left");
        assert!(b.next_frame().unwrap().is_none());
    }

    #[test]
    fn an_overlong_frame_is_an_error() {
        let (a, mut b) = pair().unwrap();
        let mut bytes = ((MAX_BODY + 1) as u32).to_le_bytes().to_vec();
        bytes.push(1);
        (&a.stream).write_all(&bytes).unwrap();
        b.fill().unwrap();
        assert!(matches!(
            b.next_frame(),
            Err(ChannelError::Message(MessageError::TooLong(_)))
        ));
    }
}
