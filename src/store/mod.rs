//! The durable store: messages with their full history, the due-time queue, idempotency keys, the
//! remote-id index, inbound messages, SMPP multi-part submits being reassembled, the outbox of
//! receipts and replies owed to SMPP accounts ([`outbox`]), the opt-out (suppression) list and
//! the conversations (a thread per customer, [`conversations`]), in one ordered key space (layout in
//! [`keys`]) of the storage engine ([`engine`]: fjall, an LSM tree).
//!
//! All writes go through one writer thread ([`writer`]) that applies them in order and commits them
//! in groups: every request waiting while a flush runs shares the next flush, and no caller hears
//! "done" before its write is in the engine's journal *and* that journal is fdatasync'ed. Reads
//! go straight to the engine from any thread. Nothing outside this module touches the engine, so
//! it can be replaced behind these functions (it was: sled until 2026-11, see [`migrate`]).

mod conversations;
mod engine;
mod floors;
mod keys;
mod known;
mod migrate;
mod outbox;
mod record;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};

use crate::optout::{OptOut, OptOutRules, OptOutScope, OptOutSource};
use crate::route::{Lane, ReplyRules, Router};

use crate::message::{
    InboundMessage, Message, MessageId, Millis, NewMessage, ReceiptOutcome, Status,
};

pub use conversations::{
    Conversation, ConversationCursor, Direction, LastMessage, TEXT_HEAD_CHARS, ThreadItem,
};
pub use keys::normalize_remote_id;
pub use outbox::{
    DeadLetter, DeadLetterEntry, OutboxDepth, OutboxEntry, OutboxItem, OutboxKey, OutboxReader,
    smpp_target,
};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk or the database failed (full disk, I/O error): nothing of the request was kept.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The disk failed while the request was being written (its journal write or sync): it may
    /// or may not have reached the disk. The store refuses everything from then on; after a
    /// restart the request is there if its bytes were written whole before the failure.
    #[error("storage failed while writing; the request may or may not be stored: {0}")]
    Unconfirmed(String),
    /// A stored record could not be decoded (corruption or a record from a newer version).
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt {
        /// The record's key, for the log.
        key: String,
        /// What did not decode.
        reason: String,
    },
    /// No message has this id (never existed, or swept after its retention).
    #[error("message {0} not found")]
    NotFound(MessageId),
    /// The operation does not apply in the message's current status.
    #[error("message {id} is {status}")]
    WrongStatus {
        /// The message.
        id: MessageId,
        /// Its status now.
        status: Status,
    },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key already used for message {0} with a different request")]
    IdempotencyConflict(MessageId),
    /// A part of a multi-part submit that cannot belong to one (part number 0 or above the
    /// total, or a total below 2): the client's error, nothing was kept.
    #[error("invalid message part: {0}")]
    InvalidPart(String),
    /// The recipient opted out of messages of this kind (the submission's kind is marketing,
    /// or their opt-out covers every message): nothing was kept.
    #[error("{number} opted out of {} messages", .scope.as_str())]
    OptedOut {
        /// The recipient.
        number: String,
        /// What they opted out of.
        scope: OptOutScope,
        /// When.
        at: Millis,
        /// By a keyword, or through the API (not `source`: thiserror takes that name for the
        /// error's cause).
        by: OptOutSource,
        /// The message that did it, when it was a keyword.
        text: Option<String>,
    },
    /// The writer thread has stopped (shutdown in progress, or it failed).
    #[error("store is closed")]
    Closed,
    /// The database could not be opened (locked by another process, unreadable, no space).
    #[error("could not open the store at {path}: {reason}")]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// Why, with a hint where there is one.
        reason: String,
    },
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The database directory.
    pub path: PathBuf,
    /// The engine's block cache; the main lever on the daemon's memory.
    pub cache_capacity_bytes: u64,
    /// The most write requests one group commit takes.
    pub max_group: usize,
    /// Writes are refused (503) while the disk has less free space than this.
    pub min_free_bytes: u64,
    /// Routes, reply rules, webhook subscriptions, quiet hours, opt-out keywords, the reply
    /// window: what a configuration reload may replace ([`Store::reconfigure`]).
    pub rules: StoreRules,
    /// What the writer counts for `GET /metrics`.
    pub metrics: crate::metrics::StoreMetrics,
    /// Whether a message's `callback_url` gets its status events (`[callbacks]` is on).
    pub callbacks: bool,
}

impl StoreOptions {
    /// Defaults for a store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreOptions {
            path: path.into(),
            cache_capacity_bytes: 8 * 1024 * 1024,
            max_group: 4096,
            min_free_bytes: 64 * 1024 * 1024,
            rules: StoreRules::default(),
            metrics: Default::default(),
            callbacks: false,
        }
    }
}

/// The rules the writer applies that a configuration reload may replace.
#[derive(Debug, Clone)]
pub struct StoreRules {
    /// The routes: the queue keeps one lane per route step.
    pub router: Arc<Router>,
    /// Which SMPP account each customer's message goes to (as an outbox reply); empty: none.
    pub replies: Arc<ReplyRules>,
    /// Which webhook endpoints want which events (written to their outboxes); empty: none.
    pub webhooks: Arc<crate::webhook::event::Subscriptions>,
    /// When marketing messages wait instead of going out; None: never.
    pub quiet_hours: Option<crate::schedule::QuietHours>,
    /// Customers' STOP / START / HELP keywords and their confirmations; default: disabled.
    pub optouts: Arc<OptOutRules>,
    /// How long after a conversation's last activity a customer's message to a number that
    /// has no conversation with them (the reply number of an alphanumeric sender) still
    /// joins it.
    pub reply_window_ms: Millis,
}

impl Default for StoreRules {
    /// Every channel takes every message; no accounts, webhooks, quiet hours or opt-out
    /// keywords; a week's reply window.
    fn default() -> Self {
        StoreRules {
            router: Arc::new(Router::default()),
            replies: Arc::new(ReplyRules::default()),
            webhooks: Arc::new(crate::webhook::event::Subscriptions::default()),
            quiet_hours: None,
            optouts: Arc::new(OptOutRules::default()),
            reply_window_ms: DEFAULT_REPLY_WINDOW_MS,
        }
    }
}

/// Seven days: the default of [`StoreOptions::reply_window_ms`].
pub const DEFAULT_REPLY_WINDOW_MS: Millis = 7 * 24 * 3600 * 1000;

/// What a submission returned: a new message, or the one an earlier request with the same
/// idempotency key created.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Stored now.
    Created(Message),
    /// Stored by an earlier request with the same idempotency key.
    Existing(Message),
}

impl Submitted {
    /// The message either way.
    pub fn message(&self) -> &Message {
        match self {
            Submitted::Created(m) | Submitted::Existing(m) => m,
        }
    }
}

/// One part of a long message an SMPP client submits as several submit_sm. The parts are kept
/// until all are there, then become one message.
#[derive(Debug, Clone)]
pub struct SubmitPart {
    /// The submitting account's scope: [`smpp_target`] of its system_id.
    pub scope: String,
    /// source_addr as written; with the destination, reference and total it names the assembly.
    pub source: String,
    /// The client's reference for the whole message (UDH or SAR).
    pub reference: u16,
    /// How many parts the whole message has (at least 2).
    pub total: u8,
    /// This part's number, from 1.
    pub seq: u8,
    /// This part's decoded text.
    pub text: String,
    /// The message as this part describes it; when it is the first part to arrive, this is the
    /// message made (text, encoding and parts are recomputed from the joined parts).
    pub message: NewMessage,
}

/// What a submitted part did.
// One value per request, moved once: boxing the message would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum PartSubmitted {
    /// The part is kept (or was kept already: a repeat); other parts are missing. The id is the
    /// one the whole message will have, the same for every part.
    Kept(MessageId),
    /// This part completed the message, now queued under the id every part was given.
    Complete(Message),
    /// This part belongs to a message already complete; answer with its id, nothing was stored.
    /// (A client sends a part again when its response was lost; the completed message is
    /// remembered for as long as an incomplete one waits for its parts.)
    Repeated(MessageId),
}

impl PartSubmitted {
    /// The message's id, whichever it is.
    pub fn id(&self) -> MessageId {
        match self {
            PartSubmitted::Kept(id) | PartSubmitted::Repeated(id) => *id,
            PartSubmitted::Complete(m) => m.id,
        }
    }
}

/// A message claimed for sending: it is now "sending" on `channel`, durably.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The message as it is now (shared with the writer's cache of recent messages).
    pub message: Arc<Message>,
    /// Which parts (0-based) still need sending; parts accepted on an earlier attempt are skipped.
    pub parts_to_send: Vec<u8>,
}

/// What channels and the correlator report; each is applied atomically.
#[derive(Debug, Clone)]
pub enum Update {
    /// The channel took parts (usually one) and (usually) gave them an id for receipts.
    PartAccepted {
        /// The message.
        id: MessageId,
        /// The parts (0-based).
        parts: std::ops::RangeInclusive<u8>,
        /// The channel that took it: remote ids are unique per channel only.
        channel: String,
        /// The network's id for the part, indexed for receipts.
        remote_id: Option<String>,
        /// When.
        at: Millis,
    },
    /// Sending failed: `retry_at` None means permanently; otherwise the message is queued again
    /// for that time, or expires if that is past its validity.
    SendFailed {
        /// The message.
        id: MessageId,
        /// Why, for its history.
        reason: String,
        /// When to try again; None: never.
        retry_at: Option<Millis>,
        /// When it failed.
        at: Millis,
        /// The channel never tried it: the attempt is not counted.
        not_attempted: bool,
        /// The network may have it (the link dropped before its answer): a retry may send it
        /// twice, so the message is marked and counted as a possible duplicate.
        maybe_sent: bool,
        /// The channel that refused it for good (with `retry_at` None): when its route has a
        /// next step, the message is handed to it instead of failing.
        refused_by: Option<String>,
    },
    /// A delivery receipt for the part that carries `remote_id` on `channel`. When it comes before
    /// the channel's acceptance (some SMSCs do that), it is kept and applied on acceptance.
    Receipt {
        /// The channel it came on.
        channel: String,
        /// The network's id of the part.
        remote_id: String,
        /// What happened to the part.
        outcome: ReceiptOutcome,
        /// The network's error, if any.
        reason: Option<String>,
        /// When it came.
        at: Millis,
    },
    /// A message from a customer.
    Inbound(InboundNew),
}

/// An inbound message as a channel reports it.
#[derive(Debug, Clone)]
pub struct InboundNew {
    /// The channel it came on.
    pub channel: String,
    /// The customer's number (E.164 when it could be normalized).
    pub from: String,
    /// The number or sender id the customer wrote to.
    pub to: String,
    /// The decoded text.
    pub text: String,
    /// When it arrived.
    pub received_at: Millis,
    /// The message it answers, when known.
    pub in_reply_to: Option<MessageId>,
    /// Where it belongs when it is one part of a concatenated message.
    pub part: Option<crate::channel::InboundPart>,
    /// Fingerprint of what the network delivered; a second arrival within its window (or the
    /// retention) is ignored.
    pub dedupe: Option<crate::channel::Dedupe>,
}

/// What applying one [`Update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The message changed; its new status.
    Message {
        /// The message.
        id: MessageId,
        /// Its status after the update.
        status: Status,
    },
    /// The update did not change anything (already final, unknown id, duplicate).
    Ignored(String),
    /// A receipt was kept until its acceptance arrives.
    ReceiptKept,
    /// A part of a concatenated inbound message was kept until the others come.
    PartKept,
    /// An inbound message was stored under this id.
    Inbound(MessageId),
}

/// Filters for listing messages.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only messages in this status.
    pub status: Option<Status>,
    /// Only messages to this E.164 number.
    pub to: Option<String>,
}

/// Most messages one listing examines (a filter may skip most of them).
pub const LIST_SCAN_BUDGET: usize = 10_000;

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The messages, newest first.
    pub messages: Vec<Message>,
    /// Where the next page starts (pass as `before`): after a full page, its last message;
    /// when the listing stopped at [`LIST_SCAN_BUDGET`], the last message it examined. None:
    /// nothing older matches.
    pub next: Option<MessageId>,
}

/// What start-up recovery found.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Messages left "sending" by a crash and queued again (they may be sent twice).
    pub requeued_possible_duplicates: u64,
}

/// Counters of the store since it was opened.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Group commits flushed and fdatasync'ed.
    pub syncs: AtomicU64,
    /// Write requests committed.
    pub writes: AtomicU64,
    /// Set while the last commit failed (disk full, I/O error): health reports it.
    pub failing: std::sync::atomic::AtomicBool,
    /// Set when the engine failed to apply or sync a group: reads are refused until a restart.
    pub broken: std::sync::atomic::AtomicBool,
    /// Cancelled when `broken` is set, for whoever must act on it (the daemon stops, so that
    /// its service manager restarts it: see [`Store::broken`]).
    broken_signal: tokio_util::sync::CancellationToken,
}

impl StoreStats {
    /// Marks the store broken; true the first time (to log it once).
    pub(crate) fn mark_broken(&self) -> bool {
        let first = !self.broken.swap(true, Ordering::Relaxed);
        self.broken_signal.cancel();
        first
    }
}

struct Inner {
    tree: engine::Engine,
    /// Where scans of each lane of the due index start (see [`floors`]).
    floors: Arc<floors::DueFloors>,
    stats: Arc<StoreStats>,
    path: PathBuf,
    /// The routes in force (a reload replaces them).
    router: std::sync::RwLock<Arc<Router>>,
    /// Bumped by the syncer after a commit that added outbox entries is durable.
    outbox_changed: Arc<watch::Sender<u64>>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    ops: mpsc::Sender<writer::Op>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Store {
    /// Opens (or creates) the store, requeues messages a crash left "sending", and starts the
    /// writer thread.
    pub fn open(options: &StoreOptions) -> Result<(Store, Recovery), StoreError> {
        finish_interrupted_compaction(&options.path)?;
        let db = open_db(&options.path, options.cache_capacity_bytes)?;
        conversations::migrate_keys(&db)?;
        let stats = Arc::new(StoreStats::default());
        let floors = Arc::new(floors::DueFloors::default());
        let mut committer =
            writer::Committer::new(db.clone(), floors.clone(), options, stats.clone());
        let mut durability = writer::Durability::new(db.clone());
        let recovery = writer::recover(&db, &mut committer, &mut durability)?;
        let (tx, rx) = mpsc::channel(options.max_group.max(1) * 2);
        let thread_stats = stats.clone();
        let max_group = options.max_group.max(1);
        let outbox_changed = Arc::new(watch::Sender::new(0u64));
        let thread_outbox = outbox_changed.clone();
        let thread = std::thread::Builder::new()
            .name("parla-store".into())
            .spawn(move || {
                writer::run(
                    committer,
                    durability,
                    rx,
                    thread_stats,
                    max_group,
                    thread_outbox,
                )
            })
            .map_err(|e| StoreError::Open {
                path: options.path.clone(),
                reason: e.to_string(),
            })?;
        let store = Store {
            inner: Arc::new(Inner {
                tree: db,
                floors,
                stats,
                path: options.path.clone(),
                router: std::sync::RwLock::new(options.rules.router.clone()),
                outbox_changed,
            }),
            ops: tx,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        };
        Ok((store, recovery))
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Counters of group commits and writes.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(writer::Reply<T>) -> writer::Op,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.ops
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores a new message in the queue. Returns once it is on disk. With an idempotency key
    /// (scoped by `scope`, e.g. the API client), a repeated request returns the first message, and
    /// a different request under the same key is refused. A message the recipient opted out of
    /// (marketing to a number on the list, anything to one that opted out of all) is refused
    /// with [`StoreError::OptedOut`], checked in the same write.
    pub async fn submit(
        &self,
        new: NewMessage,
        idempotency: Option<(String, String)>,
    ) -> Result<Submitted, StoreError> {
        self.call(|reply| writer::Op::Submit {
            new,
            idempotency,
            reply,
        })
        .await
    }

    /// Cancels a message that has not been handed to a channel.
    pub async fn cancel(&self, id: MessageId) -> Result<Message, StoreError> {
        self.call(|reply| writer::Op::Cancel { id, reply }).await
    }

    /// Moves due messages to "sending" on `channel`, durably, and returns them. Messages no longer
    /// queued are skipped; messages past their validity become expired instead.
    pub async fn claim(
        &self,
        ids: Vec<MessageId>,
        channel: String,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.call(|reply| writer::Op::Claim {
            ids,
            channel,
            reply,
        })
        .await
    }

    /// Applies channel reports, each atomically, all in one group commit.
    pub async fn apply(&self, updates: Vec<Update>) -> Result<Vec<Applied>, StoreError> {
        self.call(|reply| writer::Op::Apply { updates, reply })
            .await
    }

    /// Deletes up to `max` messages that settled (reached a final status, or "sent" with no
    /// receipt since) before `finished_before`, with their index entries; also inbound messages
    /// and unmatched receipts older than that. Returns how many records were deleted.
    pub async fn sweep(&self, finished_before: Millis, max: usize) -> Result<usize, StoreError> {
        self.call(|reply| writer::Op::Sweep {
            finished_before,
            max,
            reply,
        })
        .await
    }

    /// Expires queued messages past their validity among the `max` earliest due (see the
    /// writer); returns how many.
    pub async fn expire_queued(&self, now: Millis, max: usize) -> Result<usize, StoreError> {
        self.call(|reply| writer::Op::ExpireQueued { now, max, reply })
            .await
    }

    /// Stores concatenated inbound messages whose first part came before `started_before` and
    /// whose other parts never came, as incomplete messages (their missing parts named), so a
    /// lost part never holds back what the customer wrote. Returns how many were stored.
    pub async fn expire_assemblies(
        &self,
        started_before: Millis,
        max: usize,
    ) -> Result<usize, StoreError> {
        self.call(|reply| writer::Op::ExpireAssemblies {
            started_before,
            max,
            reply,
        })
        .await
    }

    /// Keeps one part of an SMPP client's multi-part submit, durably, and returns the id the
    /// whole message has (every part gets the same one, also when a part is sent again after a
    /// lost response). The part that completes the set turns the parts into one message, queued
    /// like [`Store::submit`] queues one, in the same write; a part sent again after that, until
    /// the message's first part is as old as [`Store::expire_submit_assemblies`] is told, is
    /// [`PartSubmitted::Repeated`]. A part number of 0 or above the total, or a total below 2,
    /// is refused with [`StoreError::InvalidPart`]. When the recipient opted out of the
    /// completed message, it is stored as failed ("the customer opted out") instead of queued:
    /// every part was already answered with its id, so the client learns it from query_sm or
    /// its receipt.
    pub async fn submit_part(&self, part: SubmitPart) -> Result<PartSubmitted, StoreError> {
        self.call(|reply| writer::Op::SubmitPart { part, reply })
            .await
    }

    /// Turns up to `max` multi-part submits whose first part came before `started_before` and
    /// whose other parts never came into failed messages, under the id their parts were given,
    /// so the client learns it from query_sm and (when it asked for one) a receipt. Returns how
    /// many. The markers of completed ones whose first part came before `started_before` are
    /// deleted too, silently: neither counted nor limited by `max` (one small key each).
    pub async fn expire_submit_assemblies(
        &self,
        started_before: Millis,
        max: usize,
    ) -> Result<usize, StoreError> {
        self.call(|reply| writer::Op::ExpireSubmitAssemblies {
            started_before,
            max,
            reply,
        })
        .await
    }

    /// The customer's entry on the opt-out list, if any.
    pub fn optout(&self, number: &str) -> Result<Option<OptOut>, StoreError> {
        self.readable()?;
        let key = keys::optout(number);
        match self.inner.tree.get(&key)? {
            Some(bytes) => record::decode_optout(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries of the opt-out list in number order, strictly after the number
    /// `after` when given (the last number of the previous page).
    pub fn list_optouts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OptOut>, StoreError> {
        use std::ops::Bound;
        self.readable()?;
        let start = match after {
            Some(number) => Bound::Excluded(keys::optout(number)),
            None => Bound::Included(vec![keys::OPTOUT]),
        };
        let end = Bound::Excluded(vec![keys::OPTOUT + 1]);
        let mut out = Vec::with_capacity(limit.min(1000));
        for item in self.inner.tree.range((start, end)).take(limit) {
            let (key, value) = item?;
            out.push(record::decode_optout(&key, &value)?);
        }
        Ok(out)
    }

    /// Puts `number` (E.164) on the opt-out list with `scope`, replacing any entry it had (an
    /// operator's explicit choice, so it may narrow a STOPALL). Returns the entry once durable.
    pub async fn add_optout(&self, number: &str, scope: OptOutScope) -> Result<OptOut, StoreError> {
        let number = number.to_string();
        self.call(|reply| writer::Op::AddOptOut {
            number,
            scope,
            reply,
        })
        .await
    }

    /// Takes `number` off the opt-out list; false when it was not on it.
    pub async fn remove_optout(&self, number: &str) -> Result<bool, StoreError> {
        let number = number.to_string();
        self.call(|reply| writer::Op::RemoveOptOut { number, reply })
            .await
    }

    /// Up to `limit` entries owed to `target`, oldest first, strictly after `after` when given.
    /// An entry stays until [`Store::outbox_done`] deletes it.
    pub fn outbox(
        &self,
        target: &str,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        use std::ops::Bound;
        self.readable()?;
        let prefix = keys::outbox_prefix(target);
        // The prefix ends with the name's 0x00: every key of the target sorts below the same
        // name followed by 0x01.
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let start = match after {
            Some(k) if k.0 >= end => return Ok(Vec::new()),
            Some(k) if k.0 >= prefix => Bound::Excluded(k.0.clone()),
            _ => Bound::Included(prefix),
        };
        let mut out = Vec::with_capacity(limit.min(1000));
        for item in self
            .inner
            .tree
            .range((start, Bound::Excluded(end)))
            .take(limit)
        {
            let (key, value) = item?;
            out.push(OutboxEntry {
                item: record::decode_outbox(&key, &value)?,
                key: OutboxKey(key.to_vec()),
            });
        }
        Ok(out)
    }

    /// Gives up on an outbox entry: it moves, durably, to the dead letters with `reason`
    /// (a key no longer there is ignored).
    pub async fn outbox_dead_letter(
        &self,
        key: OutboxKey,
        reason: String,
    ) -> Result<(), StoreError> {
        self.call(|reply| writer::Op::DeadLetter { key, reason, reply })
            .await
    }

    /// Puts the dead-lettered webhook event `event_id` back in its endpoint's outbox, durably;
    /// false when there is no such dead letter.
    pub async fn replay_dead_letter(&self, event_id: &str) -> Result<bool, StoreError> {
        let event_id = event_id.to_owned();
        self.call(|reply| writer::Op::Replay { event_id, reply })
            .await
    }

    /// Dead letters in key order (by target, then oldest first), at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterEntry>, StoreError> {
        self.readable()?;
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix([keys::DEAD_LETTER]).take(limit) {
            let (key, value) = item?;
            out.push(DeadLetterEntry {
                target: keys::target_of(&key).unwrap_or_default(),
                letter: record::decode_dead_letter(&key, &value)?,
                key: OutboxKey(key.to_vec()),
            });
        }
        Ok(out)
    }

    /// Deletes delivered outbox entries, durably; keys no longer there are ignored.
    pub async fn outbox_done(&self, keys: Vec<OutboxKey>) -> Result<(), StoreError> {
        self.call(|reply| writer::Op::OutboxDone { keys, reply })
            .await
    }

    /// Deletes up to `max` outbox entries, of any target, written before `older_than` (their
    /// id's time), oldest first within each target; returns how many. For entries no consumer
    /// took in time: an account removed from the config, or one that never binds.
    pub async fn expire_outbox(&self, older_than: Millis, max: usize) -> Result<usize, StoreError> {
        self.call(|reply| writer::Op::ExpireOutbox {
            older_than,
            max,
            reply,
        })
        .await
    }

    /// The targets whose name starts with `prefix` that are owed entries, in order, at most
    /// `limit`: one seek per target, however many entries each has.
    pub fn outbox_targets(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        use std::ops::Bound;
        self.readable()?;
        let mut start = vec![keys::OUTBOX];
        start.extend_from_slice(prefix.as_bytes());
        let within = start.clone();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(item) = self
                .inner
                .tree
                .range((Bound::Included(start.clone()), Bound::Unbounded))
                .next()
            else {
                break;
            };
            let key = item?.0;
            if !key.starts_with(&within) {
                break;
            }
            let Some(target) = keys::target_of(&key) else {
                return Err(StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "outbox key without a target".into(),
                });
            };
            // Every key of the target sorts below its name followed by 0x01.
            start = keys::outbox_prefix(&target);
            if let Some(last) = start.last_mut() {
                *last = 1;
            }
            out.push(target);
        }
        Ok(out)
    }

    /// How many entries `target` is owed (a scan: for tests and periodic metrics).
    pub fn outbox_len(&self, target: &str) -> Result<usize, StoreError> {
        self.readable()?;
        let mut n = 0;
        for item in self
            .inner
            .tree
            .scan_prefix(keys::outbox_prefix(target))
            .keys()
        {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Changes after every commit that added outbox entries, once they are durable. A consumer
    /// reads [`Store::outbox`] once at start, then again after each `changed()`.
    pub fn outbox_changed(&self) -> watch::Receiver<u64> {
        self.inner.outbox_changed.subscribe()
    }

    /// Refuses reads once memory may differ from the disk (see [`StoreStats::broken`]).
    fn readable(&self) -> Result<(), StoreError> {
        if self.inner.stats.broken.load(Ordering::Relaxed) {
            Err(StoreError::Unavailable(
                "the store failed to write and must be restarted".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Reads one message.
    pub fn get(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.readable()?;
        let key = keys::message(id);
        match self.inner.tree.get(&key)? {
            Some(bytes) => record::decode_message(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// A page of messages, newest first, strictly older than `before` when given. A filtered
    /// listing examines at most [`LIST_SCAN_BUDGET`] messages: the page may then hold fewer
    /// than `limit` and still name where the next one starts.
    pub fn list(
        &self,
        filter: &ListFilter,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.list_within(filter, before, limit, LIST_SCAN_BUDGET)
    }

    fn list_within(
        &self,
        filter: &ListFilter,
        before: Option<MessageId>,
        limit: usize,
        budget: usize,
    ) -> Result<ListPage, StoreError> {
        self.readable()?;
        let prefix = match (&filter.to, filter.status) {
            (Some(to), _) => keys::recipient_prefix(to),
            (None, Some(status)) if keys::status_indexed(status) => keys::status_prefix(status),
            // Sent and delivered are not indexed: their messages are most of the store, and
            // the newest records hold the page.
            (None, _) => vec![keys::MESSAGE],
        };
        let mut end = prefix.clone();
        match before {
            Some(id) => end.extend_from_slice(&id.to_bytes()),
            None => end.extend_from_slice(&[0xff; 17]),
        }
        let mut messages = Vec::with_capacity(limit.min(1000));
        let mut examined = 0usize;
        let mut last_examined = None;
        for item in self.inner.tree.range(prefix.clone()..end).rev() {
            if messages.len() >= limit {
                break;
            }
            if examined == budget {
                return Ok(ListPage {
                    messages,
                    next: last_examined,
                });
            }
            let (key, value) = item?;
            let Some(id) = keys::id_suffix(&key) else {
                continue;
            };
            examined += 1;
            last_examined = Some(id);
            let message = if prefix[0] == keys::MESSAGE {
                record::decode_message(&key, &value)?
            } else {
                match self.get(id)? {
                    Some(m) => m,
                    None => continue,
                }
            };
            if filter.status.is_some_and(|s| s != message.status) {
                continue;
            }
            messages.push(message);
        }
        let next = (messages.len() == limit)
            .then(|| messages.last().map(|m| m.id))
            .flatten();
        Ok(ListPage { messages, next })
    }

    /// Ids of queued messages in `lanes` due at or before `now`, earliest first.
    pub fn due(
        &self,
        lanes: &[Lane],
        now: Millis,
        limit: usize,
    ) -> Result<Vec<MessageId>, StoreError> {
        self.readable()?;
        let mut due: Vec<(Millis, MessageId)> = Vec::new();
        for &lane in lanes {
            let floor = self.inner.floors.read(lane);
            let end = keys::due_range(lane, now).end;
            let mut first = None;
            for key in self
                .inner
                .tree
                .range(floor.start.clone()..end.clone())
                .keys()
                .take(limit)
            {
                let key = key?;
                if let (Some(at), Some(id)) = (keys::due_time(&key), keys::id_suffix(&key)) {
                    due.push((at, id));
                }
                first.get_or_insert_with(|| key.to_vec());
            }
            self.inner.floors.raise(lane, floor, first.unwrap_or(end));
        }
        if lanes.len() > 1 {
            due.sort_unstable();
            due.truncate(limit);
        }
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    /// When the earliest queued message in `lanes` is due, if any.
    pub fn next_due(&self, lanes: &[Lane]) -> Result<Option<Millis>, StoreError> {
        let mut earliest = None;
        for &lane in lanes {
            let floor = self.inner.floors.read(lane);
            let end = keys::due_lane_end(lane);
            let first = self
                .inner
                .tree
                .range(floor.start.clone()..end.clone())
                .keys()
                .next()
                .transpose()?;
            if let Some(at) = first.as_deref().and_then(keys::due_time) {
                earliest = Some(earliest.map_or(at, |e: Millis| e.min(at)));
            }
            let to = first.map_or(end, |k| k.to_vec());
            self.inner.floors.raise(lane, floor, to);
        }
        Ok(earliest)
    }

    /// Every lane of the queue (for tools and tests that want all due messages).
    pub fn lanes(&self) -> Vec<Lane> {
        self.router().lanes()
    }

    /// The routes in force.
    pub fn router(&self) -> Arc<Router> {
        self.inner
            .router
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Applies a configuration reload's rules (routes, reply rules, webhook subscriptions,
    /// quiet hours, opt-out keywords, the reply window) from the next request on; queued
    /// messages are refiled when the routes changed. Returns once that is durable.
    pub async fn reconfigure(&self, rules: StoreRules) -> Result<(), StoreError> {
        let router = rules.router.clone();
        self.call(|reply| writer::Op::Reconfigure {
            rules: Box::new(rules),
            reply,
        })
        .await?;
        *self
            .inner
            .router
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = router;
        Ok(())
    }

    /// Number of messages in a status, counted from its index or, for statuses without one,
    /// from every record (for tests and tools; the status gauges are kept by the writer).
    pub fn count_status(&self, status: Status) -> Result<u64, StoreError> {
        let mut n = 0;
        if keys::status_indexed(status) {
            for item in self
                .inner
                .tree
                .scan_prefix(keys::status_prefix(status))
                .keys()
            {
                item?;
                n += 1;
            }
        } else {
            for item in self.inner.tree.scan_prefix([keys::MESSAGE]) {
                let (key, value) = item?;
                if record::decode_message(&key, &value)?.status == status {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Inbound messages, newest first, strictly older than `before` when given.
    pub fn list_inbound(
        &self,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        self.readable()?;
        let start = vec![keys::INBOUND];
        let end = match before {
            Some(id) => keys::inbound(id),
            None => vec![keys::INBOUND + 1],
        };
        let mut out = Vec::new();
        for item in self.inner.tree.range(start..end).rev().take(limit) {
            let (key, value) = item?;
            out.push(record::decode_inbound(&key, &value)?);
        }
        Ok(out)
    }

    /// Resolves once the engine has failed to apply or sync a group (an I/O error, a full disk
    /// that the free-space reserve did not catch). From then on memory may differ from the
    /// disk and every request is refused; only a restart, which replays the synced journal,
    /// brings the store back.
    pub fn broken(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.inner.stats.broken_signal.clone().cancelled_owned()
    }

    /// Ok while the writer runs and its last commit succeeded.
    pub fn health(&self) -> Result<(), StoreError> {
        if self.ops.is_closed() {
            Err(StoreError::Closed)
        } else if self.inner.stats.failing.load(Ordering::Relaxed) {
            Err(StoreError::Unavailable(
                "the last write to disk failed (disk full or I/O error)".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Messages requeued after crashes, over the store's whole life.
    pub fn possible_duplicates(&self) -> Result<u64, StoreError> {
        writer::read_counter(&self.inner.tree, keys::POSSIBLE_DUPLICATES)
    }

    /// Stops the writer after the requests already sent, flushing and syncing on the way out.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.ops.send(writer::Op::Close { reply }).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// Opens the database at `path`, first importing a store an older parla wrote with sled.
fn open_db(path: &Path, cache_capacity_bytes: u64) -> Result<engine::Engine, StoreError> {
    let db = engine::Engine::open(path, cache_capacity_bytes)?;
    migrate::import_sled_store(path, &db, cache_capacity_bytes)?;
    Ok(db)
}

/// Whether `path` holds a store (of this version, or one written with sled that opening imports).
pub fn exists_at(path: &Path) -> bool {
    engine::Engine::exists_at(path) || migrate::has_sled_store(path)
}

/// What `parla store compact` did.
#[derive(Debug, Clone)]
pub struct CompactReport {
    /// Keys copied.
    pub keys: u64,
    /// Size of the store directory before.
    pub bytes_before: u64,
    /// And after.
    pub bytes_after: u64,
}

/// Rewrites the store into a fresh database holding only live data and swaps it in, so the
/// space of deleted records is given back at once. The daemon must be stopped (the database's
/// lock enforces it).
pub fn compact(path: &Path, cache_capacity_bytes: u64) -> Result<CompactReport, StoreError> {
    let io_err = |e: std::io::Error| StoreError::Unavailable(e.to_string());
    finish_interrupted_compaction(path)?;
    let bytes_before = dir_size(path).map_err(io_err)?;
    let fresh_path = sibling(path, "compact-new");
    let old_path = sibling(path, "compact-old");
    if fresh_path.exists() {
        std::fs::remove_dir_all(&fresh_path).map_err(io_err)?;
    }
    let keys = {
        let old = open_db(path, cache_capacity_bytes)?;
        let fresh = open_db(&fresh_path, cache_capacity_bytes)?;
        let keys = fresh.copy_in(
            old.iter()
                .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec()))),
        )?;
        fresh.persist()?;
        // In table files, not only in the journal: the compacted store opens without a replay.
        fresh.write_buffer_to_table()?;
        keys
    };
    // Swap: the old directory is kept until the new one is in place, so a crash mid-way leaves
    // one complete database at `path` or at `compact-old` (which the next run finds).
    std::fs::rename(path, &old_path).map_err(io_err)?;
    std::fs::rename(&fresh_path, path).map_err(io_err)?;
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err)?;
    }
    std::fs::remove_dir_all(&old_path).map_err(io_err)?;
    let bytes_after = dir_size(path).map_err(io_err)?;
    Ok(CompactReport {
        keys,
        bytes_before,
        bytes_after,
    })
}

/// A compaction stopped between its two renames leaves the live data at `<path>.compact-old`: put
/// it back (or drop it, when the new database made it into place), so opening never starts empty.
fn finish_interrupted_compaction(path: &Path) -> Result<(), StoreError> {
    let io_err = |e: std::io::Error| StoreError::Open {
        path: path.to_path_buf(),
        reason: format!("finishing an interrupted compaction: {e}"),
    };
    let old_path = sibling(path, "compact-old");
    if !old_path.exists() {
        return Ok(());
    }
    if exists_at(path) {
        std::fs::remove_dir_all(&old_path).map_err(io_err)?;
    } else {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(io_err)?;
        }
        std::fs::rename(&old_path, path).map_err(io_err)?;
    }
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Bytes the files under `path` take on disk (allocated blocks: the engine's journal is a
/// sparse file of a fixed length).
fn dir_size(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}

pub(crate) fn stat_add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod outbox_tests;

#[cfg(test)]
mod optout_tests;

#[cfg(test)]
mod conversation_tests;
