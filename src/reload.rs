//! Configuration reload (SIGHUP, `systemctl reload parla`): the file is read and checked again;
//! a configuration with problems is refused whole and the running one stays. A good one is
//! applied in place:
//!
//! - channels (the simulator, modems, SMPP carrier links): unchanged ones keep running (their
//!   connections and sessions untouched); removed ones stop and hand back what they held;
//!   changed ones restart with their new settings; new ones start;
//! - routes, reply rules, webhook subscriptions, opt-out keywords, quiet hours and the
//!   conversation reply window: from the store's next request on (queued messages move to
//!   their new lanes);
//! - webhook endpoints: unchanged ones keep delivering; removed ones stop (their undelivered
//!   events stay in the store); changed and new ones start;
//! - API tokens: from the next request on;
//! - SMPP server accounts: unchanged ones keep their binds; changed and removed ones have
//!   their binds unbound (clients bind again under the new settings); new ones can bind.
//!
//! Everything else (listen addresses, the store, HTTP limits, defaults, retries, logging, the
//! rest of the SMPP server's settings, callbacks) takes effect at the next restart; a reload
//! that changes it says so in the log.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::channel::{Channel, ChannelContext, ChannelRegistry, EventEnvelope, EventSink};
use crate::config::{ModemSettings, Settings, SimSettings, SmppClientSettings, WebhookSettings};
use crate::dispatch::{ChannelHandle, DispatchChange};
use crate::http::ApiState;
use crate::store::{Store, StoreError, StoreRules};

/// A channel as configured: what decides whether a reload leaves it running.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSpec {
    /// The simulated channel.
    Sim(SimSettings),
    /// A GSM modem.
    Modem(ModemSettings),
    /// An SMPP carrier link.
    Smpp(SmppClientSettings),
}

impl ChannelSpec {
    /// The channels `settings` configure, in configuration order.
    pub fn all(settings: &Settings) -> Vec<ChannelSpec> {
        let sim = settings
            .sim
            .enabled
            .then(|| ChannelSpec::Sim(settings.sim.clone()));
        sim.into_iter()
            .chain(settings.modems.iter().cloned().map(ChannelSpec::Modem))
            .chain(settings.smpp.client.iter().cloned().map(ChannelSpec::Smpp))
            .collect()
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        match self {
            ChannelSpec::Sim(s) => &s.name,
            ChannelSpec::Modem(m) => &m.name,
            ChannelSpec::Smpp(l) => &l.name,
        }
    }
}

/// Starts channels: each gets its job queue, status, event sink and its own stop token (a
/// child of the daemon's channel shutdown).
pub struct ChannelStarter {
    /// Where channels report events (the correlator's queue).
    pub events: mpsc::Sender<EventEnvelope>,
    /// Cancelled at shutdown, after the dispatcher stopped.
    pub shutdown: CancellationToken,
    /// What SMPP links count.
    pub links: crate::metrics::LinkMetrics,
}

impl ChannelStarter {
    /// Starts the channel `spec` describes as a task in `tasks`; returns the dispatcher's handle
    /// of it and the token that stops it alone.
    pub fn start(
        &self,
        spec: &ChannelSpec,
        tasks: &mut JoinSet<()>,
    ) -> (ChannelHandle, CancellationToken) {
        let channel: Box<dyn Channel> = match spec {
            ChannelSpec::Sim(s) => {
                tracing::warn!(
                    channel = %s.name,
                    "the SIMULATED channel is on: messages are not sent to any phone"
                );
                Box::new(crate::sim::SimChannel::new(s.clone()))
            }
            ChannelSpec::Modem(m) => Box::new(crate::modem::ModemChannel::new(m.clone())),
            ChannelSpec::Smpp(l) => {
                Box::new(crate::smpp::SmppChannel::new(l.clone()).with_metrics(self.links.clone()))
            }
        };
        let name: Arc<str> = Arc::from(channel.name());
        let window = channel.window().max(1);
        let (jobs_tx, jobs_rx) = mpsc::channel(window);
        let status = crate::channel::StatusHandle::new(&name, channel.kind());
        let token = self.shutdown.child_token();
        let ctx = ChannelContext {
            jobs: jobs_rx,
            events: EventSink::new(name.clone(), self.events.clone()),
            status: status.clone(),
            shutdown: token.clone(),
        };
        let task = channel.run(ctx);
        let handle = ChannelHandle {
            name: name.to_string(),
            jobs: jobs_tx,
            claims: Arc::new(tokio::sync::Semaphore::new(window)),
            status,
        };
        tasks.spawn(async move {
            if let Err(e) = task.await {
                tracing::error!(channel = %name, error = %e, "channel stopped");
            }
        });
        (handle, token)
    }
}

/// What a reload did, for the log and the caller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Channels started that were not there.
    pub channels_added: Vec<String>,
    /// Channels stopped for good.
    pub channels_removed: Vec<String>,
    /// Channels restarted with new settings.
    pub channels_restarted: Vec<String>,
    /// Channels left running as they were.
    pub channels_kept: Vec<String>,
    /// Webhook endpoints started, stopped or restarted.
    pub webhooks_changed: Vec<String>,
    /// Settings that changed but take effect only at the next restart.
    pub need_restart: Vec<&'static str>,
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The store refused the new rules (it is failing or closed).
    #[error("the store did not take the new rules: {0}")]
    Store(#[from] StoreError),
    /// The daemon is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

struct Request {
    settings: Box<Settings>,
    reply: oneshot::Sender<Result<ReloadReport, ReloadError>>,
}

/// Asks the running daemon to apply new settings; cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Request>,
}

impl ReloadHandle {
    /// Applies `settings` (already loaded and checked) and says what changed.
    pub async fn reload(&self, settings: Settings) -> Result<ReloadReport, ReloadError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                settings: Box::new(settings),
                reply,
            })
            .await
            .map_err(|_| ReloadError::ShuttingDown)?;
        rx.await.map_err(|_| ReloadError::ShuttingDown)?
    }
}

/// The parts of the running daemon a reload changes.
pub struct Reloader {
    /// The settings in force.
    pub current: Settings,
    /// The store, for its rules.
    pub store: Store,
    /// The API, for its tokens.
    pub api: Arc<ApiState>,
    /// The dispatcher's change queue.
    pub dispatch: mpsc::Sender<DispatchChange>,
    /// What `GET /v1/channels` lists.
    pub registry: ChannelRegistry,
    /// Starts channels.
    pub starter: ChannelStarter,
    /// The daemon's channel tasks (awaited at shutdown).
    pub channel_tasks: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    /// Each running channel's spec and stop token.
    pub channels: HashMap<String, (ChannelSpec, CancellationToken)>,
    /// Each running webhook endpoint's settings and stop token.
    pub webhooks: HashMap<String, (WebhookSettings, CancellationToken)>,
    /// The daemon's shutdown (parent of the webhook endpoints' tokens).
    pub shutdown: CancellationToken,
    /// Where webhook delivery tasks run.
    pub webhook_tasks: JoinSet<()>,
    /// What webhook deliveries count.
    pub webhook_metrics: crate::metrics::WebhookMetrics,
    /// The SMPP server's accounts, when it runs.
    pub smpp_accounts: Option<tokio::sync::watch::Sender<Vec<crate::config::SmppAccountSettings>>>,
}

impl Reloader {
    /// Starts the delivery tasks of `endpoints` (the daemon's first ones).
    pub fn start_webhooks(mut self, endpoints: &[WebhookSettings]) -> Self {
        let mut ignored = ReloadReport::default();
        let mut settings = self.current.clone();
        settings.webhooks = endpoints.to_vec();
        self.apply_webhooks(&settings, &mut ignored);
        self
    }

    /// Serves reload requests until shutdown; returns the handle to send them with.
    pub fn spawn(self, tasks: &mut JoinSet<()>) -> ReloadHandle {
        let (tx, rx) = mpsc::channel(4);
        tasks.spawn(self.run(rx));
        ReloadHandle { tx }
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    let result = self.apply(*request.settings).await;
                    let _ = request.reply.send(result);
                }
                Some(_) = self.webhook_tasks.join_next() => {}
            }
        }
        // Endpoints stop with the daemon; this task holds the last spare event sender, which
        // goes with it so the correlator can end.
        while self.webhook_tasks.join_next().await.is_some() {}
    }

    async fn apply(&mut self, new: Settings) -> Result<ReloadReport, ReloadError> {
        let mut report = ReloadReport {
            need_restart: need_restart(&self.current, &new),
            ..ReloadReport::default()
        };
        // The store's rules first: new channels' lanes must exist before they look for work.
        let router = Arc::new(crate::route::Router::new(&new.routes, &new.channel_names()));
        // Replies follow the SMPP server's accounts: the new ones while the server runs (a
        // server turned on or off takes a restart).
        let server = match &self.smpp_accounts {
            Some(_) if new.smpp.server.enabled => &new.smpp.server,
            _ => &self.current.smpp.server,
        };
        let rules = rules(&new, server, router.clone());
        self.store.reconfigure(rules).await?;
        if self
            .dispatch
            .send(DispatchChange::Routes(router))
            .await
            .is_err()
        {
            return Err(ReloadError::ShuttingDown);
        }
        self.api.set_tokens(new.http.tokens.clone());
        if let Some(accounts) = &self.smpp_accounts
            && new.smpp.server.enabled
        {
            accounts.send_if_modified(|running| {
                let changed = *running != new.smpp.server.account;
                if changed {
                    running.clone_from(&new.smpp.server.account);
                }
                changed
            });
        }
        self.apply_channels(&new, &mut report).await?;
        self.apply_webhooks(&new, &mut report);
        self.current = new;
        Ok(report)
    }

    async fn apply_channels(
        &mut self,
        new: &Settings,
        report: &mut ReloadReport,
    ) -> Result<(), ReloadError> {
        let wanted = ChannelSpec::all(new);
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            let kept = wanted.iter().any(|spec| {
                spec.name() == name && Some(spec) == self.channels.get(&name).map(|c| &c.0)
            });
            let still_there = wanted.iter().any(|spec| spec.name() == name);
            if kept {
                report.channels_kept.push(name);
                continue;
            }
            // Stop feeding it before it stops: what it holds, it hands back to the queue.
            self.dispatch
                .send(DispatchChange::Remove(name.clone()))
                .await
                .map_err(|_| ReloadError::ShuttingDown)?;
            if let Some((_, token)) = self.channels.remove(&name) {
                token.cancel();
            }
            self.registry.remove(&name);
            if !still_there {
                tracing::info!(channel = %name, "channel removed by the reload");
                report.channels_removed.push(name);
            }
        }
        for spec in wanted {
            let name = spec.name().to_owned();
            if self.channels.contains_key(&name) {
                continue;
            }
            let (handle, token) = {
                let mut tasks = self.channel_tasks.lock().await;
                self.starter.start(&spec, &mut tasks)
            };
            self.registry.put(handle.status.clone());
            self.dispatch
                .send(DispatchChange::Add(handle))
                .await
                .map_err(|_| ReloadError::ShuttingDown)?;
            self.channels.insert(name.clone(), (spec, token));
            if report.channels_kept.contains(&name) {
                continue;
            }
            if self.current_has(&name) {
                tracing::info!(channel = %name, "channel restarted with its new settings");
                report.channels_restarted.push(name);
            } else {
                tracing::info!(channel = %name, "channel added by the reload");
                report.channels_added.push(name);
            }
        }
        Ok(())
    }

    fn current_has(&self, name: &str) -> bool {
        ChannelSpec::all(&self.current)
            .iter()
            .any(|spec| spec.name() == name)
    }

    fn apply_webhooks(&mut self, new: &Settings, report: &mut ReloadReport) {
        let names: Vec<String> = self.webhooks.keys().cloned().collect();
        for name in names {
            let same = new
                .webhooks
                .iter()
                .any(|w| w.name == name && Some(w) == self.webhooks.get(&name).map(|e| &e.0));
            if !same && let Some((_, token)) = self.webhooks.remove(&name) {
                token.cancel();
                report.webhooks_changed.push(name);
            }
        }
        for endpoint in &new.webhooks {
            if self.webhooks.contains_key(&endpoint.name) {
                continue;
            }
            let token = self.shutdown.child_token();
            self.webhook_tasks.spawn(crate::webhook::run(
                endpoint.clone(),
                self.store.clone(),
                token.clone(),
                self.webhook_metrics.clone(),
            ));
            self.webhooks
                .insert(endpoint.name.clone(), (endpoint.clone(), token));
            if !report.webhooks_changed.contains(&endpoint.name) {
                report.webhooks_changed.push(endpoint.name.clone());
            }
        }
    }
}

/// The store's rules under `settings`, with the SMPP server's accounts of `server`.
pub fn rules(
    settings: &Settings,
    server: &crate::config::SmppServerSettings,
    router: Arc<crate::route::Router>,
) -> StoreRules {
    StoreRules {
        router,
        replies: Arc::new(if server.enabled {
            crate::route::ReplyRules::from_server(server)
        } else {
            crate::route::ReplyRules::default()
        }),
        webhooks: Arc::new(crate::webhook::event::Subscriptions::from_settings(
            &settings.webhooks,
        )),
        quiet_hours: settings.quiet_hours.window(),
        optouts: Arc::new(crate::optout::OptOutRules::new(
            &settings.optouts,
            i64::try_from(settings.defaults.validity.as_millis()).unwrap_or(i64::MAX),
        )),
        reply_window_ms: i64::try_from(settings.conversations.reply_window.as_millis())
            .unwrap_or(i64::MAX),
    }
}

/// The sections that changed between `old` and `new` but apply only at a restart.
fn need_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    // Compared through their Debug form: these sections are only read at start, and a
    // difference is only reported, never acted on.
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut http_old = old.http.clone();
    http_old.tokens = new.http.tokens.clone();
    let mut out = Vec::new();
    for (name, changed) in [
        ("http (except tokens)", differs(&http_old, &new.http)),
        ("store", differs(&old.store, &new.store)),
        ("defaults", differs(&old.defaults, &new.defaults)),
        ("retry", differs(&old.retry, &new.retry)),
        ("smpp.server (except accounts)", {
            let mut old_server = old.smpp.server.clone();
            old_server.account.clone_from(&new.smpp.server.account);
            old_server != new.smpp.server
        }),
        ("callbacks", differs(&old.callbacks, &new.callbacks)),
        ("log", differs(&old.log, &new.log)),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}
