//! Prometheus metrics (`GET /metrics`), with the official `prometheus-client` crate: one
//! registry per daemon (no global state, so tests can run several daemons in one process).
//!
//! Two sources: counters and histograms the code updates as things happen ([`StoreMetrics`],
//! kept by the store's writer, which sees every status change; [`LinkMetrics`], kept by SMPP
//! links), and values read at each scrape ([`Live`]: channel states and device details, outbox
//! depths, store commit counters).

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::channel::{ChannelRegistry, LinkState};
use crate::message::{Message, Status};
use crate::store::Store;

/// The content type of the text format `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    channel: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

/// Histogram buckets of message latencies: 50 ms doubling to about 55 minutes.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.05, 2.0, 17)
}

/// What the store's writer counts: it sees every message's status change and every customer's
/// message.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    by_status: Family<StatusLabels, Gauge>,
    outcomes: Family<OutcomeLabels, Counter>,
    submit_to_sent: Histogram,
    sent_to_delivered: Histogram,
    inbound: Family<ChannelLabels, Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            by_status: Family::default(),
            outcomes: Family::default(),
            submit_to_sent: Histogram::new(latency_buckets()),
            sent_to_delivered: Histogram::new(latency_buckets()),
            inbound: Family::default(),
        }
    }
}

impl StoreMetrics {
    /// Sets how many stored messages have `status` (counted when the store opens).
    pub fn set_count(&self, status: Status, count: u64) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.by_status.get_or_create(&labels(status)).set(count);
    }

    /// How many stored messages have `status` now.
    pub fn count(&self, status: Status) -> i64 {
        self.by_status.get_or_create(&labels(status)).get()
    }

    /// `new` was written over `old` (None: it is new).
    pub fn changed(&self, old: Option<&Message>, new: &Message) {
        if old.is_some_and(|o| o.status == new.status) {
            return;
        }
        if let Some(old) = old {
            self.by_status.get_or_create(&labels(old.status)).dec();
        }
        self.by_status.get_or_create(&labels(new.status)).inc();
        if matches!(new.status, Status::Queued | Status::Sending) {
            return;
        }
        let channel = new.channel.clone().unwrap_or_else(|| "none".into());
        self.outcomes
            .get_or_create(&OutcomeLabels {
                channel,
                status: new.status.as_str(),
            })
            .inc();
        let at = new.status_since();
        match new.status {
            Status::Sent => self.submit_to_sent.observe(seconds(at - new.created_at)),
            Status::Delivered => {
                let sent_at = new
                    .history
                    .iter()
                    .rev()
                    .find(|t| t.status == Status::Sent)
                    .map(|t| t.at);
                if let Some(sent_at) = sent_at {
                    self.sent_to_delivered.observe(seconds(at - sent_at));
                }
            }
            _ => {}
        }
    }

    /// A message with `status` was deleted (the retention sweep).
    pub fn deleted(&self, status: Status) {
        self.by_status.get_or_create(&labels(status)).dec();
    }

    /// A customer's message arrived on `channel`.
    pub fn received(&self, channel: &str) {
        self.inbound
            .get_or_create(&ChannelLabels {
                channel: channel.to_owned(),
            })
            .inc();
    }
}

fn labels(status: Status) -> StatusLabels {
    StatusLabels {
        status: status.as_str(),
    }
}

fn seconds(ms: i64) -> f64 {
    // Clocks may step back: a negative latency counts as none.
    ms.max(0) as f64 / 1000.0
}

/// What an SMPP carrier link counts.
#[derive(Clone, Debug, Default)]
pub struct LinkMetrics {
    in_flight: Family<ChannelLabels, Gauge>,
    window: Family<ChannelLabels, Gauge>,
    throttled: Family<ChannelLabels, Counter>,
}

impl LinkMetrics {
    /// `channel` has `in_flight` submits awaiting their answer, of a window of `window`.
    pub fn window(&self, channel: &str, in_flight: usize, window: usize) {
        let labels = ChannelLabels {
            channel: channel.to_owned(),
        };
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.in_flight.get_or_create(&labels).set(as_i64(in_flight));
        self.window.get_or_create(&labels).set(as_i64(window));
    }

    /// The SMSC answered one of `channel`'s submits with ESME_RTHROTTLED.
    pub fn throttled(&self, channel: &str) {
        self.throttled
            .get_or_create(&ChannelLabels {
                channel: channel.to_owned(),
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    webhook: String,
    result: &'static str,
}

/// What webhook and callback deliveries count.
#[derive(Clone, Debug, Default)]
pub struct WebhookMetrics {
    attempts: Family<AttemptLabels, Counter>,
    dead_lettered: Family<WebhookLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
}

impl WebhookMetrics {
    /// One POST to `webhook` ("callbacks" for messages' callback URLs) was answered 2xx, or
    /// not.
    pub fn attempt(&self, webhook: &str, delivered: bool) {
        self.attempts
            .get_or_create(&AttemptLabels {
                webhook: webhook.to_owned(),
                result: if delivered { "delivered" } else { "failed" },
            })
            .inc();
    }

    /// An event of `webhook` was given up on.
    pub fn dead_lettered(&self, webhook: &str) {
        self.dead_lettered
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
            })
            .inc();
    }
}

/// The daemon's registry and the handles the code updates.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The registry of a daemon with these parts.
    pub fn new(handles: &Handles, store: Store, channels: ChannelRegistry) -> Metrics {
        let (store_metrics, link_metrics) = (&handles.store, &handles.links);
        let mut registry = Registry::with_prefix("parla");
        registry.register(
            "messages",
            "Stored messages by status (queued, sending and sent: the queue)",
            store_metrics.by_status.clone(),
        );
        registry.register(
            "message_outcomes",
            "Messages that reached sent, delivered, failed, expired or canceled, by the channel \
             that carried their last attempt (none: never handed to one)",
            store_metrics.outcomes.clone(),
        );
        registry.register(
            "submit_to_sent_seconds",
            "From acceptance to the network accepting every part",
            store_metrics.submit_to_sent.clone(),
        );
        registry.register(
            "sent_to_delivered_seconds",
            "From the network accepting every part to the last delivery receipt",
            store_metrics.sent_to_delivered.clone(),
        );
        registry.register(
            "inbound_messages",
            "Customers' messages stored, by channel (repeats not counted)",
            store_metrics.inbound.clone(),
        );
        registry.register(
            "smpp_window_in_flight",
            "Submits an SMPP link awaits answers to",
            link_metrics.in_flight.clone(),
        );
        registry.register(
            "smpp_window_size",
            "The SMPP link's submit window",
            link_metrics.window.clone(),
        );
        registry.register(
            "smpp_throttled",
            "Submits the SMSC answered with ESME_RTHROTTLED",
            link_metrics.throttled.clone(),
        );
        registry.register(
            "webhook_attempts",
            "POSTs of webhook events and callbacks, by endpoint (callbacks: \"callbacks\") and \
             result (delivered: a 2xx answer)",
            handles.webhooks.attempts.clone(),
        );
        registry.register(
            "webhook_dead_letters",
            "Webhook events and callbacks given up on after their retry time",
            handles.webhooks.dead_lettered.clone(),
        );
        registry.register_collector(Box::new(Live { store, channels }));
        Metrics { registry }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a metric that could not be encoded is named instead.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

/// Values read at each scrape.
struct Live {
    store: Store,
    channels: ChannelRegistry,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

/// One labelled value of a family.
fn sample<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &L,
    metric: M,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_family(labels)?)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    channel: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistrationLabels {
    channel: String,
    registration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let statuses = self.channels.statuses();
        let channel = |name: &str| ChannelLabels {
            channel: name.to_owned(),
        };
        let mut up = encoder.encode_descriptor(
            "channel_up",
            "1 while the channel can send, else 0",
            None,
            MetricType::Gauge,
        )?;
        for s in &statuses {
            let labels = KindLabels {
                channel: s.name.clone(),
                kind: s.kind,
            };
            sample(
                &mut up,
                &labels,
                ConstGauge::new(i64::from(s.state == LinkState::Up)),
            )?;
        }
        for (name, help, value) in [
            (
                "channel_sms_sent",
                "SMS (parts) the network accepted from the channel",
                (|s: &crate::channel::ChannelStatus| s.sent) as fn(&_) -> u64,
            ),
            (
                "channel_sms_received",
                "SMS (parts) received on the channel, repeats not counted",
                |s| s.received,
            ),
            (
                "channel_failures",
                "Messages that failed permanently on the channel",
                |s| s.failed,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &statuses {
                sample(&mut family, &channel(&s.name), ConstCounter::new(value(s)))?;
            }
        }
        let modems: Vec<_> = statuses
            .iter()
            .filter_map(|s| s.modem.as_ref().map(|m| (s.name.as_str(), m)))
            .collect();
        let mut dbm = encoder.encode_descriptor(
            "modem_signal_dbm",
            "The modem's signal strength (AT+CSQ), when known",
            None,
            MetricType::Gauge,
        )?;
        for (name, m) in &modems {
            if let Some(v) = m.signal_dbm {
                sample(&mut dbm, &channel(name), ConstGauge::new(i64::from(v)))?;
            }
        }
        let mut registration = encoder.encode_descriptor(
            "modem_registration",
            "1 for the modem's network registration (AT+CREG: home, roaming, searching, denied, \
             not_registered, unknown)",
            None,
            MetricType::Gauge,
        )?;
        for (name, m) in &modems {
            if let Some(r) = &m.registration {
                let labels = RegistrationLabels {
                    channel: (*name).to_owned(),
                    registration: r.clone(),
                };
                sample(&mut registration, &labels, ConstGauge::new(1i64))?;
            }
        }
        // Store figures: a failing read leaves them out of this scrape.
        if let Ok(depths) = self.store.outbox_depths() {
            for (name, help, pick) in [
                (
                    "outbox_entries",
                    "Receipts, replies and webhook events owed to each target, not yet delivered",
                    (|d: &crate::store::OutboxDepth| d.pending) as fn(&_) -> u64,
                ),
                (
                    "dead_letters",
                    "Outbox entries given up on (webhook events past their retry time), kept \
                     for replay",
                    |d| d.dead,
                ),
            ] {
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for d in &depths {
                    let labels = TargetLabels {
                        target: d.target.clone(),
                    };
                    let v = i64::try_from(pick(d)).unwrap_or(i64::MAX);
                    sample(&mut family, &labels, ConstGauge::new(v))?;
                }
            }
        }
        let stats = self.store.stats();
        let load = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, value) in [
            (
                "store_syncs",
                "Group commits flushed and fdatasync'ed",
                load(&stats.syncs),
            ),
            (
                "store_writes",
                "Write requests committed",
                load(&stats.writes),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// The shared handles a daemon passes to the parts that count.
#[derive(Clone, Debug, Default)]
pub struct Handles {
    /// Kept by the store's writer.
    pub store: StoreMetrics,
    /// Kept by SMPP links.
    pub links: LinkMetrics,
    /// Kept by webhook and callback deliveries.
    pub webhooks: WebhookMetrics,
}

impl Handles {
    /// The registry over these handles and the live parts.
    pub fn registry(&self, store: Store, channels: ChannelRegistry) -> Arc<Metrics> {
        Arc::new(Metrics::new(self, store, channels))
    }
}
