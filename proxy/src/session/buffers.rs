//! The buffers a session needs only while its client is active, and where they wait while it
//! is idle.
//!
//! An idle client holds no buffer, so that thousands of idle connections cost little. But a
//! client that sends one request at a time is idle between every two: freeing its read, write
//! and queue buffers there and allocating them again on its next request cost five
//! allocations per request. Instead a session that goes idle leaves its empty buffers in a
//! small store of its thread, and the next session on that thread with a request to read takes
//! them. The store keeps at most [`KEPT`] sets, none larger than [`LARGEST`]: what many idle
//! clients cost stays bounded, and a burst's big buffers still go back to the allocator.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::BytesMut;

use super::Entry;
use crate::reply::Delivery;

/// Sets of buffers kept per thread: about as many as clients that are active at once.
const KEPT: usize = 64;
/// Buffers with more capacity than this (bytes, or queue entries) are freed, not kept.
const LARGEST: usize = 16 * 1024;
const LARGEST_QUEUE: usize = 64;

/// A session's buffers, all empty.
#[derive(Default)]
pub(super) struct Buffers {
    /// Bytes read from the client and not yet decoded.
    pub rbuf: BytesMut,
    /// Replies not yet written to the client.
    pub wbuf: BytesMut,
    /// The ordered queue of requests.
    pub queue: VecDeque<Entry>,
    /// The session's half of the reply queue's double buffer.
    pub spare: VecDeque<Delivery>,
    /// The reply queue's own buffer.
    pub replies: VecDeque<Delivery>,
}

thread_local! {
    static STORE: RefCell<Vec<Buffers>> = const { RefCell::new(Vec::new()) };
}

impl Buffers {
    /// A set left by an idle session on this thread, if any.
    pub fn take() -> Option<Buffers> {
        STORE.with_borrow_mut(Vec::pop)
    }

    /// Leaves this set for the next session to wake on this thread. Buffers that grew large
    /// are freed; the set is dropped if the store is full or nothing in it is worth keeping.
    pub fn keep(mut self) {
        debug_assert!(self.rbuf.is_empty() && self.wbuf.is_empty() && self.queue.is_empty());
        // A byte buffer that can take `LARGEST` bytes without allocating is too big to keep.
        // (`try_reclaim` also moves a buffer's free space, left behind by what was split off
        // or written, back to its start.)
        if self.rbuf.try_reclaim(LARGEST) {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.try_reclaim(LARGEST) {
            self.wbuf = BytesMut::new();
        }
        for deque in [&mut self.spare, &mut self.replies] {
            if deque.capacity() > LARGEST_QUEUE {
                *deque = VecDeque::new();
            }
        }
        if self.queue.capacity() > LARGEST_QUEUE {
            self.queue = VecDeque::new();
        }
        if self.rbuf.capacity() == 0 && self.wbuf.capacity() == 0 && self.queue.capacity() == 0 {
            return;
        }
        STORE.with_borrow_mut(|store| {
            if store.len() < KEPT {
                store.push(self);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rbuf: usize, wbuf: usize) -> Buffers {
        Buffers {
            rbuf: BytesMut::with_capacity(rbuf),
            wbuf: BytesMut::with_capacity(wbuf),
            queue: VecDeque::with_capacity(4),
            ..Buffers::default()
        }
    }

    fn drain() {
        while Buffers::take().is_some() {}
    }

    #[test]
    fn a_kept_set_is_taken_back_whole_on_the_same_thread() {
        drain();
        set(2048, 1024).keep();
        let b = Buffers::take().expect("a set was kept");
        assert!(b.rbuf.capacity() >= 2048 && b.wbuf.capacity() >= 1024);
        assert!(b.queue.capacity() >= 4);
        assert!(Buffers::take().is_none());
        // Another thread has its own store.
        set(2048, 1024).keep();
        assert!(std::thread::spawn(|| Buffers::take().is_none())
            .join()
            .unwrap());
        drain();
    }

    #[test]
    fn large_buffers_are_freed_and_the_store_is_bounded() {
        drain();
        set(1 << 20, 2048).keep();
        let b = Buffers::take().expect("the small buffers were kept");
        assert_eq!(b.rbuf.capacity(), 0);
        assert!(b.wbuf.capacity() >= 2048);
        // Space left behind by bytes split off is reclaimed, and counts against the limit.
        let mut big = BytesMut::with_capacity(64 * 1024);
        big.extend_from_slice(&[b'x'; 60 * 1024]);
        drop(big.split_to(60 * 1024));
        Buffers {
            rbuf: big,
            ..Buffers::default()
        }
        .keep();
        assert!(
            Buffers::take().is_none(),
            "nothing small enough was left to keep"
        );
        for _ in 0..KEPT + 10 {
            set(2048, 0).keep();
        }
        let mut kept = 0;
        while Buffers::take().is_some() {
            kept += 1;
        }
        assert_eq!(kept, KEPT);
    }
}
