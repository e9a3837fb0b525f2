//! Where a backend reply goes: [`ReplyTo`], and the per-session [`ReplyQueue`].
//!
//! A session owns one `ReplyQueue`. Backend tasks push `(seq, part, reply)` into it and wake
//! the session, which puts each reply into its ordered queue of requests. The queue is a
//! mutex-guarded `VecDeque` that starts empty, so an idle client costs no reply buffer; the
//! lock is held for a push or a drain only, and the session sees that replies are waiting
//! from a flag, without it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::BackendError;

/// A backend's answer to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// One complete RESP frame, raw, as the node sent it.
    Frame(Bytes),
    /// The request got no answer.
    Failed(BackendError),
    /// Not from a backend: the session's own timer saying "send it again now".
    Retry,
}

/// A reply addressed to a session's request: its sequence number and, for a request split in
/// parts, the part.
#[derive(Debug)]
pub struct Delivery {
    /// The request's sequence number within the session.
    pub seq: u64,
    /// The part of a split request (0 otherwise).
    pub part: u32,
    /// The reply.
    pub reply: Reply,
}

/// Deliveries with this sequence number are no replies but orders from another client's
/// session (CLIENT KILL, CLIENT UNBLOCK); the part is a [`Control`].
pub const CONTROL_SEQ: u64 = u64::MAX - 1;

/// What another client can make a session do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Control {
    /// CLIENT KILL: close the connection now, unanswered requests and all.
    Kill = 0,
    /// CLIENT UNBLOCK: its blocked commands answer as if they had timed out.
    UnblockTimeout = 1,
    /// CLIENT UNBLOCK ... ERROR: its blocked commands answer `-UNBLOCKED`.
    UnblockError = 2,
    /// The session's own reminder: the commands it was told to unblock have not answered yet
    /// (the order can reach a node before the blocking command does); tell the nodes again.
    UnblockAgain = 3,
}

/// Where a reply must be delivered.
#[derive(Debug)]
pub enum ReplyTo {
    /// Into a session's queue.
    Session {
        /// The session's queue.
        queue: Arc<ReplyQueue>,
        /// The request's sequence number.
        seq: u64,
        /// The part, for split requests.
        part: u32,
    },
    /// To a single waiter (topology queries, proxy-internal requests).
    Oneshot(oneshot::Sender<Reply>),
    /// Nowhere: requests on a subscriber connection, whose frames all go to the subscriber.
    Discard,
}

/// Replies waiting for a session to pick them up.
#[derive(Debug, Default)]
pub struct ReplyQueue {
    items: Mutex<VecDeque<Delivery>>,
    /// `!items.is_empty()`, kept under the lock, read without it.
    filled: AtomicBool,
    waker: AtomicWaker,
}

// === impl ReplyTo ===

impl ReplyTo {
    /// Delivers `reply`. A receiver that has gone away is ignored.
    pub fn send(self, reply: Reply) {
        match self {
            ReplyTo::Session { queue, seq, part } => queue.push(Delivery { seq, part, reply }),
            ReplyTo::Oneshot(tx) => {
                let _ = tx.send(reply);
            }
            ReplyTo::Discard => {}
        }
    }
}

// === impl ReplyQueue ===

impl ReplyQueue {
    /// Adds a delivery and wakes the session.
    pub fn push(&self, d: Delivery) {
        {
            let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
            items.push_back(d);
            self.filled.store(true, Ordering::Release);
        }
        self.waker.wake();
    }

    /// Gives the session an order from another client.
    pub fn control(&self, control: Control) {
        self.push(Delivery {
            seq: CONTROL_SEQ,
            part: control as u32,
            reply: Reply::Retry,
        });
    }

    /// Delivers `Reply::Retry` for part `part` of request `seq` after `delay`: the timer of
    /// retries and of reminders (tell a blocked connection again to stop, subscribe again).
    pub fn retry_after(self: &Arc<Self>, delay: Duration, seq: u64, part: u32) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push(Delivery {
                seq,
                part,
                reply: Reply::Retry,
            });
        });
    }

    /// Swaps the waiting deliveries with `spare`, which must be empty: the caller gets them
    /// without holding the lock while it handles them (handling may push more), and the two
    /// buffers alternate so that no allocation is needed per batch.
    pub fn take(&self, spare: &mut VecDeque<Delivery>) {
        debug_assert!(spare.is_empty());
        if spare.capacity() > 256 {
            // A burst is over: give back its memory rather than keep it for an idle client.
            spare.shrink_to(8);
        }
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *items, spare);
        self.filled.store(false, Ordering::Release);
    }

    /// Takes the queue's buffer if the queue is empty (an idle client keeps no capacity).
    pub fn release(&self) -> VecDeque<Delivery> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.is_empty() {
            std::mem::take(&mut *items)
        } else {
            VecDeque::new()
        }
    }

    /// Gives the queue `buffer` (empty) to use if it has none.
    pub fn install(&self, buffer: VecDeque<Delivery>) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.capacity() == 0 {
            *items = buffer;
        }
    }

    /// Waits until at least one delivery is queued. Cancel safe.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            if !self.is_empty() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    fn is_empty(&self) -> bool {
        !self.filled.load(Ordering::Acquire)
    }
}
