//! The single writer: applies write requests in arrival order and commits them in groups. A
//! group ends when the queue is empty or `max_group` requests were taken. Each request's writes
//! are staged in an in-memory overlay (later requests of the group read through it), then the
//! whole group goes to the engine as one atomic batch and is handed to the syncer thread, which
//! fdatasyncs the engine's journal, and only then answers the group's requests; meanwhile the
//! writer stages the next group. Staging needs no read-before-write for an undo log, and other
//! threads see a group only whole, once applied (possibly just before its sync returns: a read may
//! show a message whose 202 is on its way; if that sync then fails, the store turns broken and
//! refuses every read from then on).
//!
//! Failure: when the disk is below its free-space reserve, a group is refused before anything is
//! staged (503, nothing changed, and writes resume by themselves once space returns). If the
//! engine itself then fails to apply or sync a batch (an I/O error), memory and disk may differ:
//! the store marks itself broken and refuses everything until a restart reloads what is on disk.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use crate::optout::{self, Change, OptOut, OptOutScope, OptOutSource};
use crate::route::{Router, without_plus};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot, watch};

use super::engine::Engine;
use super::floors::DueFloors;
use super::keys;
use super::known::KnownNumbers;
use super::outbox::{self, OutboxItem, OutboxKey};
use super::record::{self, Assembly, EarlyReceipt, SubmitAssembly, SubmitRecord};
use super::{
    Applied, Claimed, Conversation, InboundNew, PartSubmitted, Recovery, StoreError, StoreStats,
    SubmitPart, Submitted, Update, stat_add,
};
use crate::message::{
    InboundMessage, Kind, Message, MessageId, Millis, NewMessage, PartState, ReceiptOutcome,
    Status, Transition, fingerprint, now_millis,
};
use crate::webhook::event::EventType;

pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write request for the writer thread.
// Each is moved once through the channel, whose slots are allocated in small blocks as they
// fill: boxing the large submissions would add an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Op {
    Submit {
        new: NewMessage,
        idempotency: Option<(String, String)>,
        reply: Reply<Submitted>,
    },
    Cancel {
        id: MessageId,
        reply: Reply<Message>,
    },
    Claim {
        ids: Vec<MessageId>,
        channel: String,
        reply: Reply<Vec<Claimed>>,
    },
    Apply {
        updates: Vec<Update>,
        reply: Reply<Vec<Applied>>,
    },
    Sweep {
        finished_before: Millis,
        max: usize,
        reply: Reply<usize>,
    },
    ExpireAssemblies {
        started_before: Millis,
        max: usize,
        reply: Reply<usize>,
    },
    ExpireQueued {
        now: Millis,
        max: usize,
        reply: Reply<usize>,
    },
    SubmitPart {
        part: SubmitPart,
        reply: Reply<PartSubmitted>,
    },
    ExpireSubmitAssemblies {
        started_before: Millis,
        max: usize,
        reply: Reply<usize>,
    },
    OutboxDone {
        keys: Vec<OutboxKey>,
        reply: Reply<()>,
    },
    DeadLetter {
        key: OutboxKey,
        reason: String,
        reply: Reply<()>,
    },
    Replay {
        event_id: String,
        reply: Reply<bool>,
    },
    ExpireOutbox {
        older_than: Millis,
        max: usize,
        reply: Reply<usize>,
    },
    AddOptOut {
        number: String,
        scope: OptOutScope,
        reply: Reply<OptOut>,
    },
    RemoveOptOut {
        number: String,
        reply: Reply<bool>,
    },
    MarkRead {
        customer: String,
        shop: String,
        seen: Option<MessageId>,
        reply: Reply<bool>,
    },
    Reconfigure {
        rules: Box<super::StoreRules>,
        reply: Reply<()>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Sends an op's answer once its group's fate is known.
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;

fn finish<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Finish {
    Box::new(move |commit_error| {
        let result = match commit_error {
            Some(StoreError::Unavailable(reason)) => Err(StoreError::Unavailable(reason.clone())),
            Some(StoreError::Unconfirmed(reason)) => Err(StoreError::Unconfirmed(reason.clone())),
            Some(e) => Err(StoreError::Unavailable(e.to_string())),
            None => result,
        };
        // The caller may have gone away (HTTP client hung up); the write stands regardless.
        let _ = reply.send(result);
    })
}

/// Makes what the engine has applied durable (its journal written out and fdatasync'ed); runs
/// on the syncer thread while the writer stages the next group.
pub struct Durability {
    db: Engine,
}

impl Durability {
    /// Syncs `db`.
    pub fn new(db: Engine) -> Self {
        Durability { db }
    }

    fn flush_and_sync(&mut self) -> Result<(), StoreError> {
        self.db.persist()
    }
}

/// Owns the database handle for writing, the overlay of the open group, and the id generator.
pub struct Committer {
    db: Engine,
    /// Lowered before a group that inserts due entries below a lane's floor is applied.
    floors: Arc<DueFloors>,
    path: PathBuf,
    min_free_bytes: u64,
    /// Shared counters and flags; `broken` says memory may differ from the disk.
    stats: Arc<StoreStats>,
    /// Writes of the open group: Some = put, None = delete; later writes of a key win.
    overlay: FastMap<Vec<u8>, Option<Vec<u8>>>,
    ids: ulid::Generator,
    /// The routes: which lane of the queue a message waits in, and failover on refusal.
    /// Routes, reply rules, webhook subscriptions, quiet hours, opt-out keywords, the reply
    /// window: what a configuration reload replaces.
    rules: super::StoreRules,
    /// Messages by status, outcomes and latencies, inbound counts.
    metrics: crate::metrics::StoreMetrics,
    /// The open group changed how many messages are in some status.
    counts_changed: bool,
    /// Whether messages' callback URLs get their status events.
    callbacks: bool,
    /// Set when the open group wrote an outbox entry: its consumers are woken once it is durable.
    outbox_added: bool,
    /// Who has a conversation record: the others' lookups are skipped.
    conversing: KnownNumbers,
    /// Who is on the opt-out list: the others' lookups are skipped.
    opted_out: KnownNumbers,
    /// The messages written last, as the open group sees them.
    recent: RecentMessages,
    /// The keys of the receipts kept because they came before their message's acceptance, as
    /// the open group sees them: every acceptance looked for one under each form of its id,
    /// reads of absent keys that reach every table; such receipts are rare and swept.
    early_receipts: std::collections::HashSet<Vec<u8>>,
}

/// The messages the writer wrote last, decoded: the dispatcher claims a message moments after
/// it was accepted and the channel's answer follows within the second, so most reads of a
/// message are of one just written, and each cost a search of the engine's memtable and a
/// decode. Holds what was staged (the overlay's view), so a group that fails to apply empties
/// it. Bounded: the oldest written leaves first.
struct RecentMessages {
    by_id: FastMap<MessageId, Arc<Message>>,
    order: std::collections::VecDeque<MessageId>,
}

/// Messages [`RecentMessages`] keeps: about 400 ms of traffic at 10,000 messages a second,
/// a few MiB (not measured).
pub(super) const RECENT_MESSAGES: usize = 4096;

impl RecentMessages {
    fn new() -> Self {
        RecentMessages {
            by_id: FastMap::with_capacity_and_hasher(RECENT_MESSAGES, Default::default()),
            order: std::collections::VecDeque::with_capacity(RECENT_MESSAGES),
        }
    }

    fn get(&self, id: MessageId) -> Option<&Arc<Message>> {
        self.by_id.get(&id)
    }

    fn put(&mut self, m: Arc<Message>) {
        let id = m.id;
        if self.by_id.insert(id, m).is_none() {
            self.order.push_back(id);
            if self.order.len() > RECENT_MESSAGES
                && let Some(oldest) = self.order.pop_front()
            {
                self.by_id.remove(&oldest);
            }
        }
    }

    fn forget(&mut self, id: MessageId) {
        self.by_id.remove(&id);
    }

    fn clear(&mut self) {
        self.by_id.clear();
        self.order.clear();
    }
}

/// The writer's own maps, hashed with foldhash (randomly seeded per process) instead of
/// SipHash: hashing their keys was 1.7% of the daemon's CPU (channel on), all on the one writer
/// thread.
type FastMap<K, V> = foldhash::HashMap<K, V>;

/// One key to write (Some) or delete (None).
type Entry = (Vec<u8>, Option<Vec<u8>>);

impl Committer {
    /// A committer writing to `db` with the rules and limits of `options` (the reserve of
    /// free space at its path, routes, reply rules, webhooks, opt-outs).
    pub fn new(
        db: Engine,
        floors: Arc<DueFloors>,
        options: &super::StoreOptions,
        stats: Arc<StoreStats>,
    ) -> Self {
        Committer {
            db,
            floors,
            min_free_bytes: options.min_free_bytes,
            stats,
            path: options.path.clone(),
            overlay: FastMap::default(),
            ids: ulid::Generator::new(),
            rules: options.rules.clone(),
            metrics: options.metrics.clone(),
            counts_changed: false,
            callbacks: options.callbacks,
            outbox_added: false,
            conversing: Default::default(),
            opted_out: Default::default(),
            recent: RecentMessages::new(),
            early_receipts: Default::default(),
        }
    }

    /// Applies a configuration reload's rules from the next request on; queued messages move
    /// to their new lanes when the routes changed.
    fn reconfigure(&mut self, rules: super::StoreRules) -> Result<(), StoreError> {
        self.rules = rules;
        let db = self.db.clone();
        refile_queue(&db, self)
    }

    /// Adds one to the store's count of possible duplicates, in the open group.
    fn count_possible_duplicate(&mut self) -> Result<(), StoreError> {
        let key = keys::counter(keys::POSSIBLE_DUPLICATES);
        let total = self
            .get(&key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes)
            + 1;
        self.write(vec![(key, Some(total.to_be_bytes().to_vec()))]);
        Ok(())
    }

    fn next_id(&mut self) -> MessageId {
        // Monotonic within the process, so ids (and listings) follow commit order.
        MessageId(self.ids.generate().unwrap_or_else(|_| ulid::Ulid::new()))
    }

    /// Reads a key as the open group sees it.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.overlay.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => Ok(self.db.get(key)?.map(|v| v.to_vec())),
        }
    }

    /// A message as the open group sees it: shared with the cache of recent ones, so a read
    /// costs no copy (callers clone it to change it).
    fn get_message(&self, id: MessageId) -> Result<Option<Arc<Message>>, StoreError> {
        if let Some(m) = self.recent.get(id) {
            return Ok(Some(m.clone()));
        }
        let key = keys::message(id);
        match self.get(&key)? {
            Some(v) => record::decode_message(&key, &v).map(|m| Some(Arc::new(m))),
            None => Ok(None),
        }
    }

    /// Stages one request's writes.
    fn write(&mut self, entries: Vec<Entry>) {
        self.overlay.extend(entries);
    }

    /// Applies everything staged to the engine as one atomic batch (in memory; not yet durable).
    fn apply_staged(&mut self) -> Result<(), StoreError> {
        if self.overlay.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.counts_changed) {
            // The counts go with the changes that made them, in the same atomic batch.
            for status in Status::ALL {
                let count = u64::try_from(self.metrics.count(status)).unwrap_or(0);
                self.overlay.insert(
                    keys::status_count(status),
                    Some(count.to_be_bytes().to_vec()),
                );
            }
        }
        let mut due_inserts = self
            .overlay
            .iter()
            .filter(|(k, v)| v.is_some() && k.first() == Some(&keys::DUE))
            .map(|(k, _)| k.as_slice())
            .peekable();
        let announced = due_inserts.peek().is_some();
        if announced {
            self.floors.writing(due_inserts);
        }
        // In key order: the batch fills one keyspace after another, each skiplist search
        // walks nearly the path of the one before, and the nodes of neighbouring keys are
        // allocated together. Measured (4 alternated runs): the writer's CPU -10%, fjall's
        // worker (flushes walk the skiplist) -19%.
        let mut entries: Vec<Entry> = self.overlay.drain().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let applied = self.db.apply(entries);
        if announced {
            self.floors.written();
        }
        applied.inspect_err(|_| {
            self.recent.clear();
            self.mark_broken();
        })
    }

    fn mark_broken(&self) {
        if self.stats.mark_broken() {
            tracing::error!(
                "the store could not write to disk; refusing all requests until restarted"
            );
        }
    }

    /// Why the next group must not be written, when the disk is below the reserve.
    fn space_refusal(&self) -> Option<String> {
        if self.stats.broken.load(Ordering::Relaxed) {
            return Some("the store failed to write and must be restarted".into());
        }
        let stat = rustix::fs::statvfs(&self.path).ok()?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        (free < self.min_free_bytes).then(|| {
            format!(
                "disk almost full: {} MiB free at {}, below store.min_free_mb ({} MiB)",
                free / (1024 * 1024),
                self.path.display(),
                self.min_free_bytes / (1024 * 1024)
            )
        })
    }

    /// Writes a message and moves its index entries from what `old` had to what it now needs;
    /// returns it as the cache of recent messages now holds it.
    fn put_message(
        &mut self,
        old: Option<&Message>,
        new: Message,
        mut extra: Vec<Entry>,
    ) -> Result<Arc<Message>, StoreError> {
        let before = old
            .map(|m| index_keys(m, &self.rules.router))
            .unwrap_or_default();
        let after = index_keys(&new, &self.rules.router);
        for gone in before.difference(&after) {
            extra.push((gone.clone(), None));
        }
        for added in after.difference(&before) {
            extra.push((added.clone(), Some(Vec::new())));
        }
        // Every status change passes here, so this is the one place receipts are owed from.
        if let Some((target, item)) = outbox::receipt_for(old, &new) {
            extra.push(self.outbox_entry(&target, &item));
        }
        let callback = new
            .options
            .callback_url
            .as_deref()
            .filter(|_| self.callbacks);
        if (callback.is_some() || self.rules.webhooks.wants(EventType::MessageStatus))
            && let Some(body) = crate::webhook::event::status_body(old, &new)
        {
            if let Some(url) = callback {
                extra.push(self.callback_entry(url, body.clone()));
            }
            extra.extend(self.events_for(EventType::MessageStatus, || body));
        }
        // A new message is activity in its recipient's conversation (status changes are not),
        // once the customer has written: most messages go to customers who never answer, and
        // keeping a record for each of them cost a third of intake. The customer's first
        // message starts the record from the latest message they were sent.
        if old.is_none()
            && let Some(existing) = self.get_conversation(&new.to, new.conversation_number())?
        {
            let conversation = Conversation::outgoing(Some(existing.clone()), &new);
            self.conversation_entries(Some(&existing), &conversation, &mut extra);
        }
        extra.push((keys::message(new.id), Some(record::encode(&new))));
        if old.is_none_or(|o| o.status != new.status) {
            self.metrics.changed(old, &new);
            self.counts_changed = true;
        }
        self.write(extra);
        let new = Arc::new(new);
        self.recent.put(new.clone());
        Ok(new)
    }

    /// A conversation record as the open group sees it.
    fn get_conversation(
        &self,
        customer: &str,
        shop: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        if !self.conversing.may_have(customer) {
            return Ok(None);
        }
        let key = keys::conversation(customer, shop);
        match self.get(&key)? {
            Some(v) => record::decode_conversation(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The customer's committed conversation records, in key order.
    fn conversations_of(&self, customer: &str) -> Result<Vec<Conversation>, StoreError> {
        if !self.conversing.may_have(customer) {
            return Ok(Vec::new());
        }
        super::conversations::scan_conversations(&self.db, customer)
    }

    /// The writes that replace `old` with `new`: the record, and its activity index entry
    /// moved to the new time.
    fn conversation_entries(
        &mut self,
        old: Option<&Conversation>,
        new: &Conversation,
        out: &mut Vec<Entry>,
    ) {
        let new_key = keys::activity(new.last_activity_at, &new.customer, &new.shop_number);
        if let Some(old) = old {
            let old_key = keys::activity(old.last_activity_at, &old.customer, &old.shop_number);
            if old_key != new_key {
                out.push((old_key, None));
            }
        }
        out.push((new_key, Some(Vec::new())));
        self.conversing.add(&new.customer);
        out.push((
            keys::conversation(&new.customer, &new.shop_number),
            Some(record::encode(new)),
        ));
    }

    /// A webhook event for `target`, under a new id (its outbox key's), to be written with the
    /// change it reports.
    fn event_entry(&mut self, target: &str, event_type: EventType, body: String) -> Entry {
        self.outbox_added = true;
        let id = self.next_id();
        let item = OutboxItem::Event {
            id: format!("evt_{id}"),
            event_type: event_type.as_str().to_owned(),
            body,
        };
        (keys::outbox(target, id), Some(record::encode(&item)))
    }

    /// A message.status event for the message's own `url`, in the outbox of the URL's host
    /// and port, to be written with the change it reports.
    fn callback_entry(&mut self, url: &str, body: String) -> Entry {
        self.outbox_added = true;
        let id = self.next_id();
        // The URL was checked when the message was accepted; one that no longer parses waits
        // in a target of its own, where the callback task dead-letters it.
        let target = crate::webhook::callback::target_of(url)
            .unwrap_or_else(|| format!("{}?", crate::webhook::callback::TARGET_PREFIX));
        let item = OutboxItem::Callback {
            url: url.to_owned(),
            id: format!("evt_{id}"),
            event_type: EventType::MessageStatus.as_str().to_owned(),
            body,
        };
        (keys::outbox(&target, id), Some(record::encode(&item)))
    }

    /// Moves a marketing message's due time out of the quiet hours; true when it moved.
    fn respect_quiet_hours(&self, m: &mut Message) -> bool {
        let Some(quiet) = &self.rules.quiet_hours else {
            return false;
        };
        if m.kind != Kind::Marketing {
            return false;
        }
        let at = m.due_at.max(now_millis());
        if !quiet.is_quiet(at) {
            return false;
        }
        m.due_at = quiet.next_allowed(at);
        true
    }

    /// Entries for every endpoint that wants `event`, whose body `body` renders only if one
    /// does.
    fn events_for(&mut self, event: EventType, body: impl FnOnce() -> String) -> Vec<Entry> {
        if !self.rules.webhooks.wants(event) {
            return Vec::new();
        }
        let body = body();
        let webhooks = self.rules.webhooks.clone();
        webhooks
            .targets_for(event)
            .map(|target| self.event_entry(target, event, body.clone()))
            .collect()
    }

    /// An outbox entry for `target`, to be written with the change that owes it.
    fn outbox_entry(&mut self, target: &str, item: &OutboxItem) -> Entry {
        self.outbox_added = true;
        (
            keys::outbox(target, self.next_id()),
            Some(record::encode(item)),
        )
    }
}

/// The index keys a message needs in its current state.
fn index_keys(m: &Message, router: &Router) -> BTreeSet<Vec<u8>> {
    let mut set = BTreeSet::new();
    if keys::status_indexed(m.status) {
        set.insert(keys::status(m.status, m.id));
    }
    set.insert(keys::recipient(&m.to, m.id));
    if m.status == Status::Queued {
        let lane = router.lane(&m.to, m.channel.as_deref(), m.options.channel.as_deref());
        set.insert(keys::due(lane, m.due_at, m.id));
    }
    // "sent" ages out too: a receipt may never come (not every network sends one), and such
    // messages must not stay forever.
    if m.status.is_final() || m.status == Status::Sent {
        set.insert(keys::finished(settled_at(m), m.id));
    }
    set
}

/// A final status reached within this long after the message was sent keeps the retention
/// entry written when it was sent.
const SETTLED_FROM_SENT_WITHIN: Millis = 3_600_000;

/// When a sent or finished message's retention starts: when it was sent, unless its final
/// status came more than an hour later (a late receipt), then from that. Most receipts come
/// within seconds, and moving the entry to the receipt's time was a delete and an insert per
/// message (a tenth of the store's writes at intake) for a retention later by seconds.
fn settled_at(m: &Message) -> Millis {
    let since = m.status_since();
    if m.status == Status::Sent {
        return since;
    }
    match m.history.iter().rev().find(|t| t.status == Status::Sent) {
        Some(sent) if since.saturating_sub(sent.at) <= SETTLED_FROM_SENT_WITHIN => sent.at,
        _ => since,
    }
}

pub fn read_counter(db: &Engine, name: &[u8]) -> Result<u64, StoreError> {
    Ok(db
        .get(keys::counter(name))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Puts messages a crash left "sending" back in the queue, marked and counted as possible
/// duplicates: the channel may have sent them before the crash. First reads how many messages
/// each status has (counted once from the status index when the store predates the counters).
pub fn recover(
    db: &Engine,
    c: &mut Committer,
    durability: &mut Durability,
) -> Result<Recovery, StoreError> {
    load_status_counts(db, c)?;
    c.conversing = KnownNumbers::load(db, keys::CONVERSATION)?;
    c.opted_out = KnownNumbers::load(db, keys::OPTOUT)?;
    for key in db.scan_prefix([keys::EARLY_RECEIPT]).keys() {
        c.early_receipts.insert(key?.to_vec());
    }
    let now = now_millis();
    refile_queue(db, c)?;
    trim_status_index(db, c)?;
    let mut stuck = Vec::new();
    for key in db.scan_prefix(keys::status_prefix(Status::Sending)).keys() {
        if let Some(id) = keys::id_suffix(&key?) {
            stuck.push(id);
        }
    }
    let mut requeued = 0;
    for id in stuck {
        let Some(old) = c.get_message(id)? else {
            continue;
        };
        if old.status != Status::Sending {
            // An index entry its record does not back: requeueing would send a message whose
            // fate is known (a duplicate SMS). The entry goes; the record is left as it is.
            tracing::warn!(%id, status = %old.status, "stale 'sending' index entry removed");
            c.write(vec![(keys::status(Status::Sending, id), None)]);
            continue;
        }
        let mut m = Message::clone(&old);
        m.possible_duplicate = true;
        m.due_at = now;
        for part in &mut m.parts {
            if part.status == Status::Sending {
                part.status = Status::Queued;
            }
        }
        m.transition(
            Status::Queued,
            now,
            Some("requeued after restart: it may already have been sent".into()),
        );
        c.put_message(Some(&old), m, Vec::new())?;
        requeued += 1;
    }
    if requeued > 0 {
        let total = read_counter(db, keys::POSSIBLE_DUPLICATES)? + requeued;
        c.write(vec![(
            keys::counter(keys::POSSIBLE_DUPLICATES),
            Some(total.to_be_bytes().to_vec()),
        )]);
    }
    c.apply_staged()?;
    durability.flush_and_sync()?;
    Ok(Recovery {
        requeued_possible_duplicates: requeued,
    })
}

/// Sets the status gauges from the stored counters, or from a scan of the status index when
/// they are missing (a store written before them); the scan's counts are stored with the next
/// group.
fn load_status_counts(db: &Engine, c: &mut Committer) -> Result<(), StoreError> {
    let mut stored = Vec::with_capacity(Status::ALL.len());
    for status in Status::ALL {
        let value = db.get(keys::status_count(status))?;
        match value.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()) {
            Some(bytes) => stored.push((status, u64::from_be_bytes(bytes))),
            None => break,
        }
    }
    if stored.len() < Status::ALL.len() {
        stored.clear();
        for status in Status::ALL {
            let count = db.scan_prefix(keys::status_prefix(status)).keys().count();
            stored.push((status, count as u64));
        }
        c.counts_changed = true;
    }
    for (status, count) in stored {
        c.metrics.set_count(status, count);
    }
    Ok(())
}

/// Status entries deleted per batch when trimming the index of an older store.
const TRIM_BATCH: usize = 10_000;

/// Removes the status entries of sent and delivered messages that versions before
/// [`keys::status_indexed`] wrote (nothing reads them now, and their messages' next changes
/// would not delete them), once per store, in bounded batches so memory stays flat on a store
/// of millions. The counter marks it done; a crash midway leaves it to the next start.
fn trim_status_index(db: &Engine, c: &mut Committer) -> Result<(), StoreError> {
    if db.get(keys::counter(keys::STATUS_INDEX_TRIMMED))?.is_some() {
        return Ok(());
    }
    let mut removed = 0usize;
    for status in Status::ALL {
        if keys::status_indexed(status) {
            continue;
        }
        let mut start = keys::status_prefix(status);
        let end = vec![keys::STATUS, status.code() + 1];
        loop {
            // A fresh scan per batch (a long-lived scan would hold every memtable flushed
            // meanwhile, see `engine`), from after the last key deleted (not over its
            // tombstones).
            let batch: Vec<Vec<u8>> = db
                .range(start.clone()..end.clone())
                .keys()
                .take(TRIM_BATCH)
                .map(|k| k.map(|k| k.to_vec()))
                .collect::<Result<_, _>>()?;
            let Some(last) = batch.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            removed += batch.len();
            c.write(batch.into_iter().map(|k| (k, None)).collect());
            c.apply_staged()?;
        }
    }
    if removed > 0 {
        tracing::info!(
            entries = removed,
            "status index: entries of sent and delivered messages removed (no longer kept)"
        );
    }
    c.write(vec![(
        keys::counter(keys::STATUS_INDEX_TRIMMED),
        Some(Vec::new()),
    )]);
    Ok(())
}

/// Files every queued message under its lane again when the routes changed since the queue was
/// written (or the queue predates lanes), so each waits where the channels now look for it.
fn refile_queue(db: &Engine, c: &mut Committer) -> Result<(), StoreError> {
    let fingerprint = c.rules.router.fingerprint();
    let stored = db.get(keys::counter(keys::ROUTES_FINGERPRINT))?;
    if stored.as_deref() == Some(&fingerprint.to_be_bytes()[..]) {
        return Ok(());
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut moved = 0usize;
    // Committed due keys, and those of the open group (a reload lands between two requests).
    let mut due: BTreeSet<Vec<u8>> = BTreeSet::new();
    for key in db.scan_prefix([keys::DUE]).keys() {
        due.insert(key?.to_vec());
    }
    for (key, value) in &c.overlay {
        if key.first() == Some(&keys::DUE) {
            if value.is_some() {
                due.insert(key.clone());
            } else {
                due.remove(key);
            }
        }
    }
    for key in due {
        let Some(id) = keys::id_suffix(&key) else {
            continue;
        };
        let wanted = c
            .get_message(id)?
            .filter(|m| m.status == Status::Queued)
            .map(|m| {
                let lane =
                    c.rules
                        .router
                        .lane(&m.to, m.channel.as_deref(), m.options.channel.as_deref());
                keys::due(lane, m.due_at, m.id)
            });
        if wanted.as_deref() != Some(&key[..]) {
            entries.push((key.clone(), None));
            if let Some(new) = wanted {
                entries.push((new, Some(Vec::new())));
                moved += 1;
            }
        }
    }
    entries.push((
        keys::counter(keys::ROUTES_FINGERPRINT),
        Some(fingerprint.to_be_bytes().to_vec()),
    ));
    if moved > 0 {
        tracing::info!(
            messages = moved,
            "routes changed: queued messages refiled under their lanes"
        );
    }
    c.write(entries);
    Ok(())
}

/// A group applied by the writer, waiting for the syncer to make it durable.
struct AppliedGroup {
    finishers: Vec<Finish>,
    close: Option<oneshot::Sender<()>>,
    /// The group wrote outbox entries: wake their consumers once durable.
    outbox_added: bool,
}

/// Longest a graceful close waits to write the write buffer to a table (systemd's stop
/// timeout is 90 s by default; the journal already holds everything).
const CLOSE_TABLE_WRITE: std::time::Duration = std::time::Duration::from_secs(10);

/// Groups waiting for the syncer; the writer waits when this many are pending.
const PENDING_GROUPS: usize = 16;

/// The writer thread's loop. It stages and applies group after group while the syncer thread
/// makes them durable and answers them, so the CPU work of one group overlaps the disk wait of
/// the previous ones (and one flush often covers several groups).
pub fn run(
    mut c: Committer,
    durability: Durability,
    mut rx: mpsc::Receiver<Op>,
    stats: Arc<StoreStats>,
    max_group: usize,
    outbox_changed: Arc<watch::Sender<u64>>,
) {
    let (to_syncer, syncer_rx) = std::sync::mpsc::sync_channel::<AppliedGroup>(PENDING_GROUPS);
    let syncer_stats = stats.clone();
    let syncer = std::thread::Builder::new()
        .name("parla-sync".into())
        .spawn(move || sync_loop(durability, syncer_rx, syncer_stats, &outbox_changed));
    let syncer = match syncer {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the store's sync thread");
            return;
        }
    };
    let mut group: Vec<Op> = Vec::with_capacity(max_group);
    let heartbeat = crate::watchdog::register("store writer");
    while let Some(first) = heartbeat.idle_blocking(|| rx.blocking_recv()) {
        group.push(first);
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let mut close = None;
        let mut finishers: Vec<Finish> = Vec::with_capacity(group.len());
        c.outbox_added = false;
        // Refuse the whole group before touching the database when the disk is nearly full:
        // the engine poisons itself on a failed journal write, while a refusal here changes
        // nothing and ends by itself when space comes back.
        let refusal = c.space_refusal();
        for op in group.drain(..) {
            match op {
                Op::Close { reply } => close = Some(reply),
                op => match &refusal {
                    None => finishers.push(process(&mut c, op)),
                    Some(reason) => finishers.push(refuse(op, reason)),
                },
            }
        }
        if let Some(reason) = refusal {
            stats.failing.store(true, Ordering::Relaxed);
            let error = StoreError::Unavailable(reason);
            for f in finishers {
                f(Some(&error));
            }
            if let Some(reply) = close {
                let _ = to_syncer.send(AppliedGroup {
                    finishers: Vec::new(),
                    close: Some(reply),
                    outbox_added: false,
                });
                break;
            }
            continue;
        }
        if let Err(e) = c.apply_staged() {
            stats.failing.store(true, Ordering::Relaxed);
            tracing::error!(error = %e, requests = finishers.len(), "store commit failed");
            for f in finishers {
                f(Some(&e));
            }
            if close.is_none() {
                continue;
            }
            finishers = Vec::new();
            c.outbox_added = false;
        }
        let closing = close.is_some();
        let outbox_added = std::mem::take(&mut c.outbox_added);
        let group = AppliedGroup {
            finishers,
            close,
            outbox_added,
        };
        if to_syncer.send(group).is_err() || closing {
            break;
        }
    }
    // Every handle is gone, or Close was sent: the syncer answers what is pending, then stops.
    drop(to_syncer);
    let _ = syncer.join();
}

/// The syncer thread: waits for applied groups, makes everything applied durable with one flush
/// and fdatasync, and answers every group that was applied before that flush began.
fn sync_loop(
    mut durability: Durability,
    rx: std::sync::mpsc::Receiver<AppliedGroup>,
    stats: Arc<StoreStats>,
    outbox_changed: &watch::Sender<u64>,
) {
    let mut pending: Vec<AppliedGroup> = Vec::new();
    let heartbeat = crate::watchdog::register("store syncer");
    while let Ok(first) = heartbeat.idle_blocking(|| rx.recv()) {
        pending.push(first);
        while let Ok(more) = rx.try_recv() {
            pending.push(more);
        }
        let writes: usize = pending.iter().map(|g| g.finishers.len()).sum();
        let result = durability.flush_and_sync();
        match &result {
            Ok(()) => {
                stat_add(&stats.syncs, 1);
                stat_add(&stats.writes, writes as u64);
                stats.failing.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, requests = writes, "store flush failed");
                stats.failing.store(true, Ordering::Relaxed);
                if stats.mark_broken() {
                    tracing::error!(
                        "the store could not write to disk; refusing all requests until restarted"
                    );
                }
            }
        }
        // Before the answers: a writer that hears "done" finds its entries' consumers woken.
        if result.is_ok() && pending.iter().any(|g| g.outbox_added) {
            outbox_changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        let mut close = None;
        for group in pending.drain(..) {
            for f in group.finishers {
                f(result.as_ref().err());
            }
            if group.close.is_some() {
                close = group.close;
            }
        }
        if let Some(reply) = close {
            if stats.broken.load(Ordering::Relaxed) {
                // The engine refuses writes once broken: the journal, as synced, is what the
                // next start replays.
                let _ = reply.send(());
                return;
            }
            // Measured: a store stopped with a full journal took 2.3 s and 140 MiB to reopen
            // with a million messages queued; without one, 0.6 s and 29 MiB.
            match durability
                .db
                .write_buffer_to_table_within(CLOSE_TABLE_WRITE)
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "the store's background compaction is still busy after {CLOSE_TABLE_WRITE:?}; \
                     the write buffer stays in its synced journal and the next start replays it"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "the store's write buffer stays in its journal; the next start replays it"
                ),
            }
            let _ = reply.send(());
            return;
        }
    }
    // The writer is gone: one last flush for anything it applied.
    let _ = durability.flush_and_sync();
}

/// Answers an op that was not applied.
fn refuse(op: Op, reason: &str) -> Finish {
    let error = || StoreError::Unavailable(reason.to_string());
    match op {
        Op::Submit { reply, .. } => finish(reply, Err(error())),
        Op::Cancel { reply, .. } => finish(reply, Err(error())),
        Op::Claim { reply, .. } => finish(reply, Err(error())),
        Op::Apply { reply, .. } => finish(reply, Err(error())),
        Op::Sweep { reply, .. } => finish(reply, Err(error())),
        Op::ExpireAssemblies { reply, .. } => finish(reply, Err(error())),
        Op::ExpireQueued { reply, .. } => finish(reply, Err(error())),
        Op::SubmitPart { reply, .. } => finish(reply, Err(error())),
        Op::ExpireSubmitAssemblies { reply, .. } => finish(reply, Err(error())),
        Op::OutboxDone { reply, .. } => finish(reply, Err(error())),
        Op::DeadLetter { reply, .. } => finish(reply, Err(error())),
        Op::Replay { reply, .. } => finish(reply, Err(error())),
        Op::ExpireOutbox { reply, .. } => finish(reply, Err(error())),
        Op::AddOptOut { reply, .. } => finish(reply, Err(error())),
        Op::RemoveOptOut { reply, .. } => finish(reply, Err(error())),
        Op::MarkRead { reply, .. } => finish(reply, Err(error())),
        Op::Reconfigure { reply, .. } => finish(reply, Err(error())),
        Op::Close { reply } => Box::new(move |_| {
            let _ = reply.send(());
        }),
    }
}

fn process(c: &mut Committer, op: Op) -> Finish {
    match op {
        Op::Submit {
            new,
            idempotency,
            reply,
        } => finish(reply, submit(c, new, idempotency)),
        Op::Cancel { id, reply } => finish(reply, cancel(c, id)),
        Op::Claim {
            ids,
            channel,
            reply,
        } => finish(reply, claim(c, ids, &channel)),
        Op::Apply { updates, reply } => {
            let result = updates
                .into_iter()
                .map(|u| apply(c, u))
                .collect::<Result<Vec<_>, _>>();
            finish(reply, result)
        }
        Op::Sweep {
            finished_before,
            max,
            reply,
        } => finish(reply, sweep(c, finished_before, max)),
        Op::ExpireAssemblies {
            started_before,
            max,
            reply,
        } => finish(reply, expire_assemblies(c, started_before, max)),
        Op::ExpireQueued { now, max, reply } => finish(reply, expire_queued(c, now, max)),
        Op::SubmitPart { part, reply } => finish(reply, submit_part(c, part)),
        Op::ExpireSubmitAssemblies {
            started_before,
            max,
            reply,
        } => finish(reply, expire_submit_assemblies(c, started_before, max)),
        Op::OutboxDone { keys, reply } => {
            outbox_done(c, keys);
            finish(reply, Ok(()))
        }
        Op::DeadLetter { key, reason, reply } => finish(reply, dead_letter(c, key, reason)),
        Op::Replay { event_id, reply } => finish(reply, replay(c, &event_id)),
        Op::ExpireOutbox {
            older_than,
            max,
            reply,
        } => finish(reply, expire_outbox(c, older_than, max)),
        Op::AddOptOut {
            number,
            scope,
            reply,
        } => finish(reply, add_optout(c, number, scope)),
        Op::RemoveOptOut { number, reply } => finish(reply, remove_optout(c, &number)),
        Op::MarkRead {
            customer,
            shop,
            seen,
            reply,
        } => finish(reply, mark_read(c, &customer, &shop, seen)),
        Op::Reconfigure { rules, reply } => finish(reply, c.reconfigure(*rules)),
        Op::Close { reply } => Box::new(move |_| {
            let _ = reply.send(());
        }),
    }
}

/// The validity a message was given, as a duration, to compare repeated requests.
fn validity_of(m: &Message) -> Millis {
    m.expires_at - m.send_at.unwrap_or(m.created_at).max(m.created_at)
}

fn same_request(existing: &Message, new: &NewMessage) -> bool {
    existing.to == new.to
        && existing.from == new.from
        && existing.text == new.text
        && existing.kind == new.kind
        && existing.reference == new.reference
        && existing.send_at == new.send_at
        && validity_of(existing) == new.validity_ms
        && existing.origin == new.origin
        && existing.options.callback_url == new.options.callback_url
}

fn submit(
    c: &mut Committer,
    new: NewMessage,
    idempotency: Option<(String, String)>,
) -> Result<Submitted, StoreError> {
    let idem_key = idempotency.map(|(scope, key)| keys::idempotency(&scope, &key));
    if let Some(k) = &idem_key
        && let Some(v) = c.get(k)?
    {
        let id = <[u8; 16]>::try_from(v.as_ref())
            .map(MessageId::from_bytes)
            .map_err(|_| StoreError::Corrupt {
                key: String::from_utf8_lossy(k).into_owned(),
                reason: "idempotency entry is not an id".into(),
            })?;
        if let Some(existing) = c.get_message(id)? {
            return if same_request(&existing, &new) {
                Ok(Submitted::Existing(Message::clone(&existing)))
            } else {
                Err(StoreError::IdempotencyConflict(id))
            };
        }
        // The message was swept after its retention: the key is free again.
    }
    // Checked here, in the writer, so no opt-out committed before this write can be missed.
    if let Some(entry) = opted_out(c, &new.to, new.kind)? {
        return Err(StoreError::OptedOut {
            number: entry.number,
            scope: entry.scope,
            at: entry.at,
            by: entry.source,
            text: entry.text,
        });
    }
    let id = c.next_id();
    let mut m = queued(id, new, now_millis(), idem_key.clone());
    join_conversation(c, &mut m)?;
    c.respect_quiet_hours(&mut m);
    let extra = match idem_key {
        Some(k) => vec![(k, Some(id.to_bytes().to_vec()))],
        None => Vec::new(),
    };
    let m = c.put_message(None, m, extra)?;
    Ok(Submitted::Created(Message::clone(&m)))
}

/// The recipient's opt-out entry when it refuses a message of `kind`.
fn opted_out(c: &Committer, to: &str, kind: Kind) -> Result<Option<OptOut>, StoreError> {
    if !c.opted_out.may_have(to) {
        return Ok(None);
    }
    let key = keys::optout(to);
    let Some(value) = c.get(&key)? else {
        return Ok(None);
    };
    let entry = record::decode_optout(&key, &value)?;
    Ok(entry.scope.refuses(kind).then_some(entry))
}

fn add_optout(c: &mut Committer, number: String, scope: OptOutScope) -> Result<OptOut, StoreError> {
    let entry = OptOut {
        number,
        scope,
        at: now_millis(),
        text: None,
        inbound_id: None,
        source: OptOutSource::Api,
    };
    let mut writes = c.events_for(EventType::OptedOut, || {
        crate::webhook::event::opted_out_body(&entry)
    });
    writes.push((keys::optout(&entry.number), Some(record::encode(&entry))));
    c.opted_out.add(&entry.number);
    c.write(writes);
    Ok(entry)
}

fn remove_optout(c: &mut Committer, number: &str) -> Result<bool, StoreError> {
    let key = keys::optout(number);
    // Through the open group: a keyword in it may have just added or removed the entry.
    let existed = c.get(&key)?.is_some();
    if existed {
        let mut writes = c.events_for(EventType::OptedIn, || {
            crate::webhook::event::opted_in_body(number, now_millis(), None)
        });
        writes.push((key, None));
        c.write(writes);
    }
    Ok(existed)
}

/// Puts a new message sent from the channel's default sender into the customer's latest
/// conversation within the reply window, whatever number it has: the shop answering a customer
/// without naming a sender goes on with that conversation.
fn join_conversation(c: &Committer, m: &mut Message) -> Result<(), StoreError> {
    if m.from.is_some() || m.options.shop_number.is_some() {
        return Ok(());
    }
    let latest = c
        .conversations_of(&m.to)?
        .into_iter()
        .filter(|conv| {
            m.created_at.saturating_sub(conv.last_activity_at) <= c.rules.reply_window_ms
        })
        .max_by_key(|conv| conv.last_activity_at);
    if let Some(conv) = latest {
        m.options.shop_number = Some(conv.shop_number);
    }
    Ok(())
}

/// A new message, queued at `now` under `id` (what every way of submitting stores).
fn queued(id: MessageId, new: NewMessage, now: Millis, idem_key: Option<Vec<u8>>) -> Message {
    let start = new.send_at.unwrap_or(now).max(now);
    Message {
        id,
        to: new.to,
        from: new.from,
        text: new.text,
        kind: new.kind,
        reference: new.reference,
        encoding: new.encoding,
        created_at: now,
        send_at: new.send_at,
        expires_at: start.saturating_add(new.validity_ms),
        status: Status::Queued,
        due_at: start,
        attempts: 0,
        channel: None,
        possible_duplicate: false,
        parts: (0..new.parts.max(1))
            .map(|_| PartState {
                status: Status::Queued,
                remote_id: None,
            })
            .collect(),
        history: vec![Transition {
            status: Status::Queued,
            at: now,
            reason: None,
        }],
        idempotency_key: idem_key,
        origin: new.origin,
        options: new.options,
    }
}

fn submit_part(c: &mut Committer, part: SubmitPart) -> Result<PartSubmitted, StoreError> {
    if part.total < 2 || part.seq == 0 || part.seq > part.total {
        return Err(StoreError::InvalidPart(format!(
            "part {} of {}: parts are numbered from 1 to a total of at least 2",
            part.seq, part.total
        )));
    }
    let key = keys::submit_assembly(
        &part.scope,
        &part.source,
        &part.message.to,
        part.reference,
        part.total,
    );
    let existing = match c.get(&key)? {
        Some(v) => Some(record::decode_submit_record(&key, &v)?),
        None => None,
    };
    let mut assembly = match existing {
        Some(SubmitRecord::Open(assembly)) => assembly,
        // The client sends a part again after the message was made (its response was lost):
        // the same id, and nothing new.
        Some(SubmitRecord::Complete { id, parts, .. })
            if parts.get(usize::from(part.seq - 1)) == Some(&fingerprint(part.text.as_bytes())) =>
        {
            return Ok(PartSubmitted::Repeated(id));
        }
        // Nothing yet, or another text under a finished message's reference: a new message
        // (references are reused; only a resend has the same text).
        _ => {
            let new = part.message;
            SubmitAssembly {
                // Allocated now: the first part's response already names the message.
                id: c.next_id(),
                first_at: now_millis(),
                to: new.to,
                from: new.from,
                kind: new.kind,
                reference: new.reference,
                send_at: new.send_at,
                validity_ms: new.validity_ms,
                origin: new.origin,
                parts: vec![None; usize::from(part.total)],
            }
        }
    };
    let corrupt = || StoreError::Corrupt {
        key: String::from_utf8_lossy(&key).into_owned(),
        reason: "assembly has the wrong number of parts".into(),
    };
    let slot = assembly
        .parts
        .get_mut(usize::from(part.seq - 1))
        .ok_or_else(corrupt)?;
    if slot.is_none() {
        *slot = Some(part.text);
    }
    // A repeat (the client resends after a lost response) keeps the first text and is
    // answered with the same id.
    if assembly.parts.iter().any(Option::is_none) {
        let id = assembly.id;
        c.write(vec![(
            key,
            Some(record::encode(&SubmitRecord::Open(assembly))),
        )]);
        return Ok(PartSubmitted::Kept(id));
    }
    let id = assembly.id;
    // Parts sent again after this one's response is lost find this marker until the assembly
    // expiry age (see `expire_submit_assemblies`).
    let marker = SubmitRecord::Complete {
        id,
        first_at: assembly.first_at,
        parts: assembly
            .parts
            .iter()
            .flatten()
            .map(|t| fingerprint(t.as_bytes()))
            .collect(),
    };
    let text: String = assembly
        .parts
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let now = now_millis();
    let mut m = queued(id, assembly.into_message(text), now, None);
    join_conversation(c, &mut m)?;
    // Every part was answered with the id already: a refusal now could only be told by
    // failing the message, which query_sm and the receipt report.
    if let Some(entry) = opted_out(c, &m.to, m.kind)? {
        for part in &mut m.parts {
            part.status = Status::Failed;
        }
        let how = match entry.source {
            OptOutSource::Keyword => "by keyword",
            OptOutSource::Api => "through the API",
        };
        m.transition(
            Status::Failed,
            now,
            Some(format!(
                "the customer opted out of {} messages ({how}, {})",
                entry.scope.as_str(),
                crate::message::format_millis(entry.at)
            )),
        );
    }
    let m = c.put_message(None, m, vec![(key, Some(record::encode(&marker)))])?;
    Ok(PartSubmitted::Complete(Message::clone(&m)))
}

impl SubmitAssembly {
    /// The message the parts make, with `text` (encoding and part count follow from it).
    fn into_message(self, text: String) -> NewMessage {
        let (encoding, parts) = crate::codec::gsm7::count_parts(&text);
        NewMessage {
            to: self.to,
            from: self.from,
            text,
            kind: self.kind,
            reference: self.reference,
            encoding,
            parts: u8::try_from(parts).unwrap_or(u8::MAX),
            send_at: self.send_at,
            validity_ms: self.validity_ms,
            origin: self.origin,
            options: Default::default(),
        }
    }
}

/// Multi-part submits that never completed become failed messages under their ids: the client
/// was told the id with every part's response, and learns the outcome from it. Markers of
/// completed ones that old are deleted, silently.
fn expire_submit_assemblies(
    c: &mut Committer,
    started_before: Millis,
    max: usize,
) -> Result<usize, StoreError> {
    // Completed markers make most of the keyspace: only the overdue records are kept to look at.
    let mut candidates = Vec::new();
    for item in c.db.scan_prefix([keys::SUBMIT_ASSEMBLY]) {
        let (key, value) = item?;
        if record::decode_submit_record(&key, &value)?.first_at() < started_before {
            candidates.push(key.to_vec());
        }
    }
    let now = now_millis();
    let mut failed = 0;
    for key in candidates {
        // Through the open group: a part may have just completed it.
        let Some(value) = c.get(&key)? else { continue };
        let record = record::decode_submit_record(&key, &value)?;
        if record.first_at() >= started_before {
            continue;
        }
        let assembly = match record {
            // One small key each, and already read: not limited by `max`.
            SubmitRecord::Complete { .. } => {
                c.write(vec![(key, None)]);
                continue;
            }
            SubmitRecord::Open(assembly) => assembly,
        };
        if failed >= max {
            continue;
        }
        let total = assembly.parts.len();
        let mut missing = Vec::new();
        let mut text = String::new();
        for (i, part) in assembly.parts.iter().enumerate() {
            match part {
                Some(t) => text.push_str(t),
                None => {
                    missing.push((i + 1).to_string());
                    text.push_str(&format!("[part {} of {total} missing]", i + 1));
                }
            }
        }
        let reason = format!(
            "{} {} of {total} never arrived from the client",
            if missing.len() == 1 { "part" } else { "parts" },
            missing.join(", ")
        );
        let id = assembly.id;
        let first_at = assembly.first_at;
        let mut m = queued(id, assembly.into_message(text), first_at, None);
        join_conversation(c, &mut m)?;
        // The client sent `total` parts' worth, whatever the placeholders count as.
        m.parts = (0..total)
            .map(|_| PartState {
                status: Status::Failed,
                remote_id: None,
            })
            .collect();
        m.status = Status::Failed;
        m.history = vec![Transition {
            status: Status::Failed,
            at: now,
            reason: Some(reason),
        }];
        tracing::warn!(%id, missing = ?missing, "a multi-part submit never completed: stored as failed");
        c.put_message(None, m, vec![(key, None)])?;
        failed += 1;
    }
    Ok(failed)
}

fn outbox_done(c: &mut Committer, done: Vec<OutboxKey>) {
    // Only outbox keys: the type is opaque, but a stray key must never delete anything else.
    let entries = done
        .into_iter()
        .filter(|k| k.0.first() == Some(&keys::OUTBOX))
        .map(|k| (k.0, None))
        .collect();
    c.write(entries);
}

/// Moves an outbox entry under the dead-letter prefix with why it was given up on.
fn dead_letter(c: &mut Committer, key: OutboxKey, reason: String) -> Result<(), StoreError> {
    if key.0.first() != Some(&keys::OUTBOX) {
        return Ok(());
    }
    let Some(value) = c.get(&key.0)? else {
        return Ok(());
    };
    let letter = outbox::DeadLetter {
        item: record::decode_outbox(&key.0, &value)?,
        reason,
        at: now_millis(),
    };
    c.write(vec![
        (keys::dead_letter_of(&key.0), Some(record::encode(&letter))),
        (key.0, None),
    ]);
    Ok(())
}

/// Puts the dead-lettered event `event_id` back in its endpoint's outbox (as a new entry, so a
/// running consumer finds it; the event keeps its id). False when there is no such letter.
fn replay(c: &mut Committer, event_id: &str) -> Result<bool, StoreError> {
    for item in c.db.scan_prefix([keys::DEAD_LETTER]) {
        let (key, value) = item?;
        let letter = record::decode_dead_letter(&key, &value)?;
        if letter.item.event_id() != Some(event_id) {
            continue;
        }
        let Some(target) = keys::target_of(&key) else {
            continue;
        };
        let entry = c.outbox_entry(&target, &letter.item);
        c.write(vec![entry, (key.to_vec(), None)]);
        return Ok(true);
    }
    Ok(false)
}

/// Deletes up to `max` outbox entries older than `older_than`, target by target, each target's
/// oldest first (entries sort by id, and ids by time: the first young one ends its target).
fn expire_outbox(c: &mut Committer, older_than: Millis, max: usize) -> Result<usize, StoreError> {
    use std::ops::Bound;
    let mut deleted = 0;
    let mut start = Bound::Included(vec![keys::OUTBOX]);
    let end = Bound::Excluded(vec![keys::OUTBOX + 1]);
    while deleted < max {
        let Some(item) = c.db.range((start.clone(), end.clone())).next() else {
            break;
        };
        let key = item?.0.to_vec();
        // The key is the prefix, the target, 0x00 and the 16 id bytes.
        let (Some(id), Some(target_end @ 2..)) = (keys::id_suffix(&key), key.len().checked_sub(16))
        else {
            return Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "outbox key without a target and an id".into(),
            });
        };
        let written = Millis::try_from(id.0.timestamp_ms()).unwrap_or(Millis::MAX);
        if written >= older_than {
            // The rest of this target is younger: go on after its last possible key (its name
            // and the 0x00 after it, then 0x01).
            let mut next = key[..target_end].to_vec();
            if let Some(last) = next.last_mut() {
                *last = 1;
            }
            start = Bound::Included(next);
            continue;
        }
        // Through the open group: a consumer may have just deleted it.
        if c.get(&key)?.is_some() {
            c.write(vec![(key.clone(), None)]);
            deleted += 1;
        }
        start = Bound::Excluded(key);
    }
    Ok(deleted)
}

fn cancel(c: &mut Committer, id: MessageId) -> Result<Message, StoreError> {
    let old = c.get_message(id)?.ok_or(StoreError::NotFound(id))?;
    if old.status != Status::Queued {
        return Err(StoreError::WrongStatus {
            id,
            status: old.status,
        });
    }
    let mut m = Message::clone(&old);
    let now = now_millis();
    for part in &mut m.parts {
        if part.status == Status::Queued {
            part.status = Status::Canceled;
        }
    }
    m.transition(Status::Canceled, now, Some("canceled by request".into()));
    let m = c.put_message(Some(&old), m, Vec::new())?;
    Ok(Message::clone(&m))
}

fn claim(
    c: &mut Committer,
    ids: Vec<MessageId>,
    channel: &str,
) -> Result<Vec<Claimed>, StoreError> {
    let now = now_millis();
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(old) = c.get_message(id)? else {
            continue;
        };
        if old.status != Status::Queued || old.due_at > now {
            continue;
        }
        let mut m = Message::clone(&old);
        // A marketing message that came due in quiet hours (retried, or waiting for a
        // channel) waits for their end.
        if c.respect_quiet_hours(&mut m) {
            m.transition(
                Status::Queued,
                now,
                Some(format!(
                    "quiet hours: deferred to {}",
                    crate::message::format_millis(m.due_at)
                )),
            );
            c.put_message(Some(&old), m, Vec::new())?;
            continue;
        }
        if now >= m.expires_at {
            expire_unsent_parts(&mut m);
            m.transition(
                Status::Expired,
                now,
                Some("validity ended before it could be sent".into()),
            );
            c.put_message(Some(&old), m, Vec::new())?;
            continue;
        }
        // The customer opted out while it waited (a scheduled campaign, quiet hours): it is
        // not sent, unless part of it already was.
        if m.parts.iter().all(|p| p.status == Status::Queued)
            && let Some(entry) = opted_out(c, &m.to, m.kind)?
        {
            for part in &mut m.parts {
                part.status = Status::Canceled;
            }
            m.transition(
                Status::Canceled,
                now,
                Some(format!(
                    "the recipient opted out of {} messages at {} before it was sent",
                    entry.scope.as_str(),
                    crate::message::format_millis(entry.at)
                )),
            );
            c.put_message(Some(&old), m, Vec::new())?;
            continue;
        }
        m.attempts += 1;
        m.channel = Some(channel.to_string());
        let mut parts_to_send = Vec::new();
        for (i, part) in m.parts.iter_mut().enumerate() {
            if part.status == Status::Queued {
                part.status = Status::Sending;
                parts_to_send.push(u8::try_from(i).unwrap_or(u8::MAX));
            }
        }
        m.transition(
            Status::Sending,
            now,
            Some(format!("attempt {} on {channel}", m.attempts)),
        );
        let message = c.put_message(Some(&old), m, Vec::new())?;
        claimed.push(Claimed {
            message,
            parts_to_send,
        });
    }
    Ok(claimed)
}

/// Expires queued messages whose validity ended while they waited (no channel up, say), so
/// their status says so instead of staying "queued" until a channel claims them. Looks at the
/// `max` earliest due messages.
fn expire_queued(c: &mut Committer, now: Millis, max: usize) -> Result<usize, StoreError> {
    let mut due = Vec::new();
    for lane in c.rules.router.lanes() {
        let start = c.floors.read(lane).start;
        let end = keys::due_range(lane, now).end;
        for key in c.db.range(start..end).keys().take(max) {
            if let Some(id) = keys::id_suffix(&key?) {
                due.push(id);
            }
        }
    }
    let mut expired = 0;
    for id in due {
        // Through the open group: it may have been claimed or canceled since.
        let Some(old) = c.get_message(id)? else {
            continue;
        };
        if old.status != Status::Queued || now < old.expires_at {
            continue;
        }
        let mut m = Message::clone(&old);
        expire_unsent_parts(&mut m);
        m.transition(
            Status::Expired,
            now,
            Some("validity ended while it waited for a channel".into()),
        );
        c.put_message(Some(&old), m, Vec::new())?;
        expired += 1;
    }
    Ok(expired)
}

fn expire_unsent_parts(m: &mut Message) {
    for part in &mut m.parts {
        if matches!(part.status, Status::Queued | Status::Sending) {
            part.status = Status::Expired;
        }
    }
}

fn receipt_status(outcome: ReceiptOutcome) -> Status {
    match outcome {
        ReceiptOutcome::Delivered => Status::Delivered,
        ReceiptOutcome::Failed => Status::Failed,
        ReceiptOutcome::Expired => Status::Expired,
    }
}

/// Derives the message status from its parts after a part changed.
fn aggregate(m: &mut Message, at: Millis, reason: Option<String>) {
    if m.status.is_final() {
        return;
    }
    let all_accepted = m
        .parts
        .iter()
        .all(|p| !matches!(p.status, Status::Queued | Status::Sending));
    if m.status == Status::Sending && all_accepted {
        let channel = m.channel.clone().unwrap_or_default();
        m.transition(Status::Sent, at, Some(format!("accepted by {channel}")));
    }
    let failed = m.parts.iter().any(|p| p.status == Status::Failed);
    let all_final = m.parts.iter().all(|p| p.status.is_final());
    if failed {
        m.transition(Status::Failed, at, reason);
    } else if all_final && m.status == Status::Sent {
        if m.parts.iter().all(|p| p.status == Status::Delivered) {
            m.transition(Status::Delivered, at, reason);
        } else {
            m.transition(Status::Expired, at, reason);
        }
    }
}

fn apply(c: &mut Committer, update: Update) -> Result<Applied, StoreError> {
    match update {
        Update::PartAccepted {
            id,
            parts,
            channel,
            remote_id,
            at,
        } => part_accepted(c, id, parts, &channel, remote_id, at),
        Update::SendFailed {
            id,
            reason,
            retry_at,
            at,
            not_attempted,
            maybe_sent,
            refused_by,
        } => send_failed(
            c,
            id,
            reason,
            retry_at,
            at,
            Attempted {
                not_attempted,
                maybe_sent,
            },
            refused_by,
        ),
        Update::Receipt {
            channel,
            remote_id,
            outcome,
            reason,
            at,
        } => receipt(c, &channel, &remote_id, outcome, reason, at),
        Update::Inbound(new) => inbound(c, new),
    }
}

fn part_accepted(
    c: &mut Committer,
    id: MessageId,
    parts: RangeInclusive<u8>,
    channel: &str,
    remote_id: Option<String>,
    at: Millis,
) -> Result<Applied, StoreError> {
    let Some(old) = c.get_message(id)? else {
        return Ok(Applied::Ignored(format!(
            "acceptance for unknown message {id}"
        )));
    };
    let mut m = Message::clone(&old);
    for part in parts.clone() {
        let Some(state) = m.parts.get_mut(usize::from(part)) else {
            return Ok(Applied::Ignored(format!("message {id} has no part {part}")));
        };
        if state.status != Status::Sending {
            return Ok(Applied::Ignored(format!(
                "part {part} of {id} is {}, not sending",
                state.status
            )));
        }
        state.status = Status::Sent;
        state.remote_id = remote_id.clone();
    }
    let mut extra = Vec::new();
    let mut early = None;
    if let Some(remote) = &remote_id {
        let key = keys::remote(channel, remote);
        // The entry lists every part the id carries, so its one receipt settles each. An entry
        // naming another message is a reused id (a modem's reference wrapped): replaced.
        let mut value = match c.get(&key)? {
            Some(v) if v.get(..16) == Some(&id.to_bytes()[..]) => v,
            _ => id.to_bytes().to_vec(),
        };
        for part in parts.clone() {
            if !value.get(16..).is_some_and(|listed| listed.contains(&part)) {
                value.push(part);
            }
        }
        extra.push((key, Some(value)));
        // A receipt that came first may have named the id in another base.
        for candidate in id_forms(remote) {
            let early_key = keys::early_receipt(channel, &candidate);
            if !c.early_receipts.contains(&early_key) {
                continue;
            }
            if let Some(v) = c.get(&early_key)? {
                early = Some(record::decode_early_receipt(&early_key, &v)?);
                c.early_receipts.remove(&early_key);
                extra.push((early_key, None));
                break;
            }
        }
    }
    aggregate(&mut m, at, None);
    if let Some(r) = early {
        for part in parts {
            if let Some(state) = m.parts.get_mut(usize::from(part)) {
                state.status = receipt_status(r.outcome);
            }
        }
        aggregate(&mut m, r.at, r.reason);
    }
    let m = c.put_message(Some(&old), m, extra)?;
    Ok(Applied::Message {
        id,
        status: m.status,
    })
}

/// What a failed attempt says about the attempt itself.
struct Attempted {
    /// The channel never tried it.
    not_attempted: bool,
    /// The network may have it.
    maybe_sent: bool,
}

fn send_failed(
    c: &mut Committer,
    id: MessageId,
    reason: String,
    mut retry_at: Option<Millis>,
    at: Millis,
    attempted: Attempted,
    refused_by: Option<String>,
) -> Result<Applied, StoreError> {
    let Attempted {
        not_attempted,
        maybe_sent,
    } = attempted;
    let Some(old) = c.get_message(id)? else {
        return Ok(Applied::Ignored(format!(
            "failure for unknown message {id}"
        )));
    };
    if old.status != Status::Sending {
        return Ok(Applied::Ignored(format!(
            "failure for {id}, which is {}",
            old.status
        )));
    }
    let mut m = Message::clone(&old);
    if not_attempted {
        m.attempts = m.attempts.saturating_sub(1);
    }
    let mut reason = reason;
    if retry_at.is_none()
        && let Some(channel) = &refused_by
        && let Some(next) = c
            .rules
            .router
            .failover(&m.to, channel, m.options.channel.as_deref())
    {
        // The route goes on: the next step gets it now (its lane follows from `channel`).
        reason = format!("{reason}; handed to {next}, next on its route");
        m.channel = Some(next.to_string());
        retry_at = Some(at);
    }
    match retry_at {
        Some(due) if due < m.expires_at => {
            if maybe_sent {
                // The retry may reach the phone a second time: marked and counted, like the
                // messages a crash left "sending".
                m.possible_duplicate = true;
                c.count_possible_duplicate()?;
            }
            for part in &mut m.parts {
                if part.status == Status::Sending {
                    part.status = Status::Queued;
                }
            }
            m.due_at = due;
            m.transition(
                Status::Queued,
                at,
                Some(format!(
                    "{reason}; retry at {}",
                    crate::message::format_millis(due)
                )),
            );
        }
        Some(_) => {
            expire_unsent_parts(&mut m);
            m.transition(
                Status::Expired,
                at,
                Some(format!("{reason}; validity ends before the next retry")),
            );
        }
        None => {
            for part in &mut m.parts {
                if matches!(part.status, Status::Queued | Status::Sending) {
                    part.status = Status::Failed;
                }
            }
            m.transition(Status::Failed, at, Some(reason));
        }
    }
    let m = c.put_message(Some(&old), m, Vec::new())?;
    Ok(Applied::Message {
        id,
        status: m.status,
    })
}

/// The forms a remote id is looked up by: itself first, then its other base when it reads as a
/// number (see [`crate::codec::receipt::id_candidates`] for the trade-off).
fn id_forms(remote_id: &str) -> Vec<String> {
    let forms = crate::codec::receipt::id_candidates(remote_id);
    if forms.is_empty() {
        vec![remote_id.to_string()]
    } else {
        forms
    }
}

fn receipt(
    c: &mut Committer,
    channel: &str,
    remote_id: &str,
    outcome: ReceiptOutcome,
    reason: Option<String>,
    at: Millis,
) -> Result<Applied, StoreError> {
    // SMSCs name the same message in hex in one PDU and in decimal in another: the receipt
    // finds its part under any of the id's forms.
    let mut found = None;
    for candidate in id_forms(remote_id) {
        let key = keys::remote(channel, &candidate);
        if let Some(v) = c.get(&key)? {
            found = Some((key, v));
            break;
        }
    }
    let Some((remote_key, v)) = found else {
        let early = EarlyReceipt {
            outcome,
            reason,
            at,
        };
        let key = keys::early_receipt(channel, remote_id);
        c.early_receipts.insert(key.clone());
        c.write(vec![(key, Some(record::encode(&early)))]);
        return Ok(Applied::ReceiptKept);
    };
    let (Some(id_bytes), Some(parts)) = (v.get(..16), v.get(16..).filter(|p| !p.is_empty())) else {
        return Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(&remote_key).into_owned(),
            reason: "remote-id entry too short".into(),
        });
    };
    let id = MessageId::from_bytes(id_bytes.try_into().unwrap_or([0; 16]));
    let Some(old) = c.get_message(id)? else {
        return Ok(Applied::Ignored(format!("receipt for swept message {id}")));
    };
    let mut m = Message::clone(&old);
    if m.status.is_final() {
        // The message's fate is known (another part failed, say), but each part's is still
        // worth keeping: the status stays, so nothing is announced.
        let mut part_changed = false;
        for &part in parts {
            if let Some(state) = m.parts.get_mut(usize::from(part))
                && !state.status.is_final()
            {
                state.status = receipt_status(outcome);
                part_changed = true;
            }
        }
        let status = m.status;
        if part_changed {
            c.put_message(Some(&old), m, Vec::new())?;
        }
        return Ok(Applied::Ignored(format!(
            "receipt for {id}, which is already {status}"
        )));
    }
    for &part in parts {
        if let Some(state) = m.parts.get_mut(usize::from(part)) {
            state.status = receipt_status(outcome);
        }
    }
    // A long message fails or expires by one part: say which.
    let total = m.parts.len();
    let reason = match (reason, parts) {
        (Some(r), [part]) if total > 1 && outcome != ReceiptOutcome::Delivered => {
            Some(format!("part {} of {total}: {r}", part + 1))
        }
        (reason, _) => reason,
    };
    aggregate(&mut m, at, reason);
    let m = c.put_message(Some(&old), m, Vec::new())?;
    Ok(Applied::Message {
        id,
        status: m.status,
    })
}

fn inbound(c: &mut Committer, mut new: InboundNew) -> Result<Applied, StoreError> {
    if let Some(dedupe) = new.dedupe.take() {
        let key = keys::seen(&new.channel, &dedupe.fingerprint);
        if let Some(seen) = c.get(&key)? {
            let seen_at = <[u8; 8]>::try_from(seen.as_slice()).map_or(0, |b| {
                i64::try_from(u64::from_be_bytes(b)).unwrap_or(i64::MAX)
            });
            if dedupe
                .within_ms
                .is_none_or(|w| new.received_at.saturating_sub(seen_at) < w)
            {
                return Ok(Applied::Ignored(format!(
                    "the same SMS from {} was already received",
                    new.from
                )));
            }
        }
        let at = u64::try_from(new.received_at).unwrap_or(0).to_be_bytes();
        c.write(vec![(key, Some(at.to_vec()))]);
    }
    let Some(part) = new.part.filter(|p| p.total > 1) else {
        let record = InboundMessage {
            id: c.next_id(),
            channel: new.channel,
            from: new.from,
            to: new.to,
            text: new.text,
            received_at: new.received_at,
            in_reply_to: new.in_reply_to,
            parts: 1,
            missing_parts: Vec::new(),
            shop_number: None,
        };
        return store_inbound(c, record, Vec::new());
    };
    if part.seq == 0 || part.seq > part.total {
        return Ok(Applied::Ignored(format!(
            "part {} of {} is out of range",
            part.seq, part.total
        )));
    }
    let key = keys::assembly(&new.channel, &new.from, part.reference, part.total);
    let mut assembly = match c.get(&key)? {
        Some(v) => record::decode_assembly(&key, &v)?,
        None => Assembly {
            to: new.to.clone(),
            first_at: new.received_at,
            in_reply_to: new.in_reply_to,
            parts: vec![None; usize::from(part.total)],
        },
    };
    let Some(slot) = assembly.parts.get_mut(usize::from(part.seq - 1)) else {
        return Ok(Applied::Ignored("assembly has the wrong size".into()));
    };
    if slot.is_some() {
        // Networks and modems repeat parts (a retransmission, a re-read after a crash).
        return Ok(Applied::Ignored(format!(
            "part {} of {} from {} was already received",
            part.seq, part.total, new.from
        )));
    }
    *slot = Some(new.text);
    assembly.in_reply_to = assembly.in_reply_to.or(new.in_reply_to);
    if assembly.parts.iter().any(Option::is_none) {
        c.write(vec![(key, Some(record::encode(&assembly)))]);
        return Ok(Applied::PartKept);
    }
    let record = assembled(
        c.next_id(),
        new.channel,
        new.from,
        assembly,
        new.received_at,
    );
    store_inbound(c, record, vec![(key, None)])
}

/// The inbound message made of an assembly's parts; missing ones are named, not invented.
fn assembled(
    id: MessageId,
    channel: String,
    from: String,
    assembly: Assembly,
    received_at: Millis,
) -> InboundMessage {
    let total = u8::try_from(assembly.parts.len()).unwrap_or(u8::MAX);
    let mut text = String::new();
    let mut missing_parts = Vec::new();
    for (i, part) in assembly.parts.into_iter().enumerate() {
        match part {
            Some(t) => text.push_str(&t),
            None => {
                let seq = u8::try_from(i + 1).unwrap_or(u8::MAX);
                missing_parts.push(seq);
                text.push_str(&format!("[part {seq} of {total} missing]"));
            }
        }
    }
    InboundMessage {
        id,
        channel,
        from,
        to: assembly.to,
        text,
        received_at,
        in_reply_to: assembly.in_reply_to,
        parts: total,
        missing_parts,
        shop_number: None,
    }
}

/// Stores a customer's message (single, reassembled or stored incomplete) and, in the same
/// write: when the reply rules give it to an account, the reply owed to that account; when it
/// is an opt-out keyword, the change to the customer's opt-out entry and its confirmation.
fn store_inbound(
    c: &mut Committer,
    mut record: InboundMessage,
    mut extra: Vec<Entry>,
) -> Result<Applied, StoreError> {
    let id = record.id;
    // Without accounts nothing is routed, and the conversation scan is not worth its reads.
    if !c.rules.replies.accounts.is_empty() {
        let conversation = conversation(c, &record)?;
        if let Some(answered) = &conversation
            && record.in_reply_to.is_none()
        {
            record.in_reply_to = Some(answered.id);
        }
        let account = conversation
            .as_ref()
            .and_then(|m| m.origin.as_ref())
            .map(|o| o.account.as_str());
        let replies = c.rules.replies.clone();
        if let Some(to) = replies.target_for(&record.to, &record.text, account) {
            extra.push(c.outbox_entry(&to.target, &outbox::reply_for(&record)));
        }
    }
    // Read before the message and the keyword's effects are staged, so a read error stages
    // none of them.
    let keyword = keyword_effect(c, &record)?;
    extra.extend(c.events_for(EventType::MessageReceived, || {
        crate::webhook::event::received_body(&record)
    }));
    let (old_conversation, started) = conversation_of_inbound(c, &mut record)?;
    let conversation = Conversation::incoming(started, &record);
    c.conversation_entries(old_conversation.as_ref(), &conversation, &mut extra);
    extra.push((keys::inbound_from(&record.from, id), Some(Vec::new())));
    extra.push((keys::inbound(id), Some(record::encode(&record))));
    c.metrics.received(&record.channel);
    c.write(extra);
    if let Some(effect) = keyword {
        apply_keyword(c, &record, effect)?;
    }
    Ok(Applied::Inbound(id))
}

/// How many of a customer's latest messages are looked at for the conversations they started.
const THREAD_SCAN: usize = 20;

/// The conversation a customer's message joins, recorded in its `shop_number`: the one with
/// the number they wrote to; else, when they wrote to a number the shop does not write from
/// (the reply number of an alphanumeric or default sender), their latest conversation within
/// the reply window; else a new one with that number. Returns the conversation's record (None
/// when it has none yet) and the record to update: the old one, or one started from the
/// latest message sent in it, or None.
fn conversation_of_inbound(
    c: &Committer,
    record: &mut InboundMessage,
) -> Result<(Option<Conversation>, Option<Conversation>), StoreError> {
    let customer = record.from.clone();
    let wrote_to = keys::shop_key(&record.to).to_owned();
    // Committed conversations and the latest messages sent (a conversation gets a record only
    // once the customer writes, so a first answer finds its thread among the messages).
    let mut candidates: Vec<(String, Millis)> = c
        .conversations_of(&customer)?
        .into_iter()
        .map(|conv| (conv.shop_number, conv.last_activity_at))
        .collect();
    let mut sent = Vec::new();
    for key in
        c.db.scan_prefix(keys::recipient_prefix(&customer))
            .keys()
            .rev()
            .take(THREAD_SCAN)
    {
        if let Some(m) = keys::id_suffix(&key?)
            .map(|id| c.get_message(id))
            .transpose()?
        {
            sent.extend(m);
        }
    }
    candidates.extend(
        sent.iter()
            .map(|m| (m.conversation_number().to_owned(), m.created_at)),
    );
    let exact = candidates
        .iter()
        .find(|(shop, _)| keys::shop_key(shop) == wrote_to);
    let latest = candidates
        .iter()
        .filter(|(_, at)| record.received_at.saturating_sub(*at) <= c.rules.reply_window_ms)
        .max_by_key(|(_, at)| *at);
    let shop = match exact.or(latest) {
        Some((shop, _)) => shop.clone(),
        None => record.to.clone(),
    };
    let old = c.get_conversation(&customer, &shop)?;
    let started = match &old {
        Some(existing) => Some(existing.clone()),
        None => sent
            .iter()
            .filter(|m| keys::shop_key(m.conversation_number()) == keys::shop_key(&shop))
            .max_by_key(|m| m.id)
            .map(|m| Conversation::outgoing(None, m)),
    };
    // The number as the conversation first recorded it, so one thread shows one spelling.
    record.shop_number = Some(started.as_ref().map_or(shop, |s| s.shop_number.clone()));
    Ok((old, started))
}

/// What an inbound keyword does: the customer's entry now, the change, and the keyword whose
/// confirmation answers it.
struct KeywordEffect {
    existing: Option<OptOut>,
    change: Change,
    answer: optout::Keyword,
}

/// The effect of `record` when it is an opt-out keyword from a customer with an E.164 number
/// (the list's key; a sender id cannot be written to anyway).
fn keyword_effect(
    c: &Committer,
    record: &InboundMessage,
) -> Result<Option<KeywordEffect>, StoreError> {
    let Some(keyword) = c.rules.optouts.keyword(&record.text) else {
        return Ok(None);
    };
    if crate::phone::normalize(&record.from, None).as_deref() != Ok(record.from.as_str()) {
        tracing::info!(from = %record.from, ?keyword, "opt-out keyword from a number that is not E.164: not applied");
        return Ok(None);
    }
    let key = keys::optout(&record.from);
    let existing = match c.get(&key)? {
        Some(v) => Some(record::decode_optout(&key, &v)?),
        None => None,
    };
    let (change, answer) = optout::decide(existing.as_ref().map(|e| e.scope), keyword);
    Ok(Some(KeywordEffect {
        existing,
        change,
        answer,
    }))
}

/// Stages a keyword's change to the list and queues its confirmation to the customer, as a
/// transactional message from the number they wrote to (when that can be a sender). The
/// confirmation skips the opt-out check on purpose: a STOP is confirmed to a number that has
/// just opted out.
fn apply_keyword(
    c: &mut Committer,
    record: &InboundMessage,
    effect: KeywordEffect,
) -> Result<(), StoreError> {
    let key = keys::optout(&record.from);
    match effect.change {
        Change::Set(scope) => {
            let entry = OptOut {
                number: record.from.clone(),
                scope,
                at: record.received_at,
                text: Some(record.text.clone()),
                inbound_id: Some(record.id),
                source: OptOutSource::Keyword,
            };
            let mut writes = c.events_for(EventType::OptedOut, || {
                crate::webhook::event::opted_out_body(&entry)
            });
            writes.push((key, Some(record::encode(&entry))));
            c.opted_out.add(&record.from);
            c.write(writes);
        }
        Change::Remove if effect.existing.is_some() => {
            let mut writes = c.events_for(EventType::OptedIn, || {
                crate::webhook::event::opted_in_body(
                    &record.from,
                    record.received_at,
                    Some(record.id),
                )
            });
            writes.push((key, None));
            c.write(writes);
        }
        Change::Remove | Change::Keep => {}
    }
    tracing::info!(from = %record.from, id = %record.id, change = ?effect.change, "opt-out keyword received");
    let Some(reply) = c.rules.optouts.reply(effect.answer).cloned() else {
        return Ok(());
    };
    let new = NewMessage {
        to: record.from.clone(),
        from: crate::phone::normalize_sender(&record.to, None).ok(),
        text: reply.text,
        kind: Kind::Transactional,
        reference: None,
        encoding: reply.encoding,
        parts: reply.parts,
        send_at: None,
        validity_ms: c.rules.optouts.reply_validity_ms,
        origin: None,
        // The confirmation answers on the channel and in the conversation the keyword came in.
        options: crate::message::MessageOptions {
            callback_url: None,
            channel: Some(record.channel.clone()),
            shop_number: Some(record.conversation_number().to_owned()),
        },
    };
    let m = queued(c.next_id(), new, now_millis(), None);
    c.put_message(None, m, Vec::new()).map(|_| ())
}

/// How many of a customer's latest messages are looked at for the one they answer.
const CONVERSATION_SCAN: usize = 20;

/// The message an inbound one answers: the customer's latest message that an SMPP account
/// submitted, from the number the customer wrote to (or the channel's default sender), within
/// the conversation window.
fn conversation(c: &Committer, inbound: &InboundMessage) -> Result<Option<Message>, StoreError> {
    let window = c.rules.replies.conversation_window_ms;
    let to = without_plus(&inbound.to);
    // Committed keys only: a message submitted in this very group is not answered yet.
    let recent: Vec<_> =
        c.db.scan_prefix(keys::recipient_prefix(&inbound.from))
            .keys()
            .rev()
            .take(CONVERSATION_SCAN)
            .collect();
    for key in recent {
        let Some(id) = keys::id_suffix(&key?) else {
            continue;
        };
        let Some(m) = c.get_message(id)? else {
            continue;
        };
        // A customer writing to another number is not answering this message.
        let same_number = m
            .from
            .as_deref()
            .is_none_or(|from| without_plus(from) == to);
        let in_window = inbound.received_at.saturating_sub(m.created_at) <= window;
        if m.origin.is_some() && same_number && in_window {
            return Ok(Some(Message::clone(&m)));
        }
    }
    Ok(None)
}

/// Clears the customer's unread count when their latest message is still `seen`; false when
/// they have no conversation. Nothing is written when there is nothing to clear.
fn mark_read(
    c: &mut Committer,
    customer: &str,
    shop: &str,
    seen: Option<MessageId>,
) -> Result<bool, StoreError> {
    let Some(mut conversation) = c.get_conversation(customer, shop)? else {
        return Ok(false);
    };
    if conversation.unread > 0 && conversation.last_inbound_id == seen {
        conversation.unread = 0;
        c.write(vec![(
            keys::conversation(customer, shop),
            Some(record::encode(&conversation)),
        )]);
    }
    Ok(true)
}

fn expire_assemblies(
    c: &mut Committer,
    started_before: Millis,
    max: usize,
) -> Result<usize, StoreError> {
    let mut candidates = Vec::new();
    for key in c.db.scan_prefix([keys::ASSEMBLY]).keys() {
        candidates.push(key?.to_vec());
    }
    let mut stored = 0;
    for key in candidates {
        if stored >= max {
            break;
        }
        // Read through the open group: a part may have just completed or extended it.
        let Some(value) = c.get(&key)? else { continue };
        let assembly = record::decode_assembly(&key, &value)?;
        if assembly.first_at >= started_before {
            continue;
        }
        let Some((channel, from)) = assembly_names(&key) else {
            c.write(vec![(key, None)]);
            continue;
        };
        let at = assembly.first_at;
        let record = assembled(c.next_id(), channel, from, assembly, at);
        tracing::warn!(id = %record.id, from = %record.from, missing = ?record.missing_parts, "stored an incomplete concatenated message: its other parts never came");
        store_inbound(c, record, vec![(key, None)])?;
        stored += 1;
    }
    Ok(stored)
}

/// Channel and sender from an assembly key.
fn assembly_names(key: &[u8]) -> Option<(String, String)> {
    let body = key.get(1..key.len().checked_sub(3)?)?;
    let mut fields = body.splitn(2, |b| *b == 0);
    let channel = String::from_utf8(fields.next()?.to_vec()).ok()?;
    let from = fields.next()?;
    let from = String::from_utf8(from.strip_suffix(&[0])?.to_vec()).ok()?;
    Some((channel, from))
}

fn sweep(c: &mut Committer, finished_before: Millis, max: usize) -> Result<usize, StoreError> {
    let mut finished = Vec::new();
    for key in
        c.db.range(vec![keys::FINISHED]..keys::finished_upper_bound(finished_before))
            .keys()
            .take(max)
    {
        let key = key?;
        if let Some(id) = keys::id_suffix(&key) {
            finished.push((key.to_vec(), id));
        }
    }
    let mut deleted = 0;
    for (finished_key, id) in finished {
        let mut entries: Vec<Entry> = vec![(finished_key, None)];
        let message = c.get_message(id)?;
        // The scan reads committed keys; the open group may have moved this message on (a late
        // receipt): then only the stale entry goes.
        let due_for_deletion = |m: &Arc<Message>| {
            (m.status.is_final() || m.status == Status::Sent) && settled_at(m) < finished_before
        };
        if let Some(m) = message.filter(due_for_deletion) {
            entries.extend(
                index_keys(&m, &c.rules.router)
                    .into_iter()
                    .map(|k| (k, None)),
            );
            if let Some(channel) = &m.channel {
                for part in &m.parts {
                    if let Some(remote) = &part.remote_id {
                        // A modem's 8-bit reference wraps: the entry may name a newer message
                        // by now, whose receipt must still find it.
                        let key = keys::remote(channel, remote);
                        let ours = c
                            .get(&key)?
                            .is_some_and(|v| v.get(..16) == Some(&id.to_bytes()[..]));
                        if ours {
                            entries.push((key, None));
                        }
                    }
                }
            }
            if let Some(k) = &m.idempotency_key {
                entries.push((k.clone(), None));
            }
            entries.push((keys::message(id), None));
            c.recent.forget(id);
            c.metrics.deleted(m.status);
            c.counts_changed = true;
            deleted += 1;
        }
        entries.sort();
        entries.dedup_by(|a, b| a.0 == b.0);
        c.write(entries);
    }
    // Inbound messages and receipts that never found their message age out on the same clock.
    let remaining = max.saturating_sub(deleted);
    let mut old_inbound = Vec::new();
    // Records deleted (the customer-index entries that go with them are not counted).
    let mut records = 0;
    let cutoff = ulid::Ulid::from_parts(u64::try_from(finished_before).unwrap_or(0), 0);
    for item in
        c.db.range(vec![keys::INBOUND]..keys::inbound(MessageId(cutoff)))
            .take(remaining)
    {
        let (key, value) = item?;
        // Its entry in the customer's index goes with it (an unreadable record has none
        // that could be found).
        if let (Ok(m), Some(id)) = (record::decode_inbound(&key, &value), keys::id_suffix(&key)) {
            old_inbound.push((keys::inbound_from(&m.from, id), None));
        }
        old_inbound.push((key.to_vec(), None));
        records += 1;
    }
    for item in c.db.scan_prefix([keys::SEEN]).take(remaining) {
        let (k, v) = item?;
        let at = <[u8; 8]>::try_from(v.as_ref()).map_or(0, u64::from_be_bytes);
        if i64::try_from(at).unwrap_or(0) < finished_before {
            old_inbound.push((k.to_vec(), None));
            records += 1;
        }
    }
    let mut stale_receipts = Vec::new();
    for item in c.db.scan_prefix([keys::EARLY_RECEIPT]).take(remaining) {
        let (k, v) = item?;
        let stale = record::decode_early_receipt(&k, &v).map_or(true, |r| r.at < finished_before);
        if stale {
            c.early_receipts.remove(&k[..]);
            stale_receipts.push((k.to_vec(), None));
        }
    }
    deleted += records + stale_receipts.len();
    if !old_inbound.is_empty() {
        c.write(old_inbound);
    }
    if !stale_receipts.is_empty() {
        c.write(stale_receipts);
    }
    Ok(deleted)
}
