//! The running daemon: opens the store, starts channels, the correlator, the dispatcher, the
//! retention sweeper, the HTTP API and the SMPP server, and shuts them down in order when asked: stop taking
//! requests, stop dispatching, let channels hand back unfinished work, apply the last events,
//! then flush and close the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use std::collections::HashMap;

use crate::channel::ChannelRegistry;
use crate::config::Settings;
use crate::conversation::Correlator;
use crate::dispatch::{Dispatcher, RetryPolicy};
use crate::http::{ApiState, router};
use crate::message::now_millis;
use crate::reload::{ChannelSpec, ChannelStarter, ReloadHandle, Reloader};
use crate::route::Router;
use crate::smpp::server::ServerContext;
use crate::store::{Store, StoreError, StoreOptions};

/// Errors that stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The API's address is taken or not allowed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The SMPP server's address is taken or not allowed.
    #[error("SMPP server cannot listen on {addr}")]
    SmppBind {
        /// The configured address.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    /// The store failed to write, and the daemon stopped so that it can be restarted.
    #[error(
        "the store failed to write to disk (see the errors above): parla stopped so that it is \
         restarted, which replays what was synced; free space or fix the disk first"
    )]
    StoreFailed,
}

/// Events waiting for the correlator; channels wait when it is behind.
const EVENT_QUEUE: usize = 8192;
/// How often finished messages past their retention are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most messages deleted per store request, so the sweep never holds up intake for long.
const SWEEP_BATCH: usize = 1000;
/// How long channels get to hand back their work at shutdown.
const CHANNEL_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A started daemon.
pub struct RunningDaemon {
    /// Where the HTTP API listens (useful when the config asked for port 0).
    pub http_addr: SocketAddr,
    /// Where the SMPP server listens, when it is enabled.
    pub smpp_addr: Option<SocketAddr>,
    /// The store, for tests and tools that look inside.
    pub store: Store,
    shutdown: CancellationToken,
    channel_shutdown: CancellationToken,
    tasks: JoinSet<()>,
    channel_tasks: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    reload: ReloadHandle,
    correlator: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

/// Starts everything; returns once the API listens and channels run.
pub async fn start(settings: Settings) -> Result<RunningDaemon, DaemonError> {
    // Bind first: a taken port fails the start before anything else has begun.
    let listener = bind(settings.http.listen).map_err(|source| DaemonError::Bind {
        addr: settings.http.listen,
        source,
    })?;
    let http_addr = listener.local_addr().map_err(DaemonError::Http)?;
    let server = &settings.smpp.server;
    let smpp_listener = if server.enabled {
        let smpp_bind_error = |source| DaemonError::SmppBind {
            addr: server.listen,
            source,
        };
        let l = bind(server.listen).map_err(smpp_bind_error)?;
        let addr = l.local_addr().map_err(smpp_bind_error)?;
        Some((l, addr))
    } else {
        None
    };
    let store_path = settings.store.resolved_path();
    let metrics = crate::metrics::Handles::default();
    let mut options = StoreOptions::new(&store_path);
    options.metrics = metrics.store.clone();
    options.cache_capacity_bytes = settings.store.cache_capacity_mb.saturating_mul(1024 * 1024);
    options.max_group = settings.store.max_group;
    options.min_free_bytes = settings.store.min_free_mb.saturating_mul(1024 * 1024);
    let routes = Arc::new(Router::new(&settings.routes, &settings.channel_names()));
    options.rules = crate::reload::rules(&settings, &settings.smpp.server, routes.clone());
    options.callbacks = settings.callbacks.enabled();
    let (store, recovery) = tokio::task::spawn_blocking(move || Store::open(&options))
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
    tracing::info!(path = %store_path.display(), "store open");
    if recovery.requeued_possible_duplicates > 0 {
        tracing::warn!(
            count = recovery.requeued_possible_duplicates,
            "messages were being sent when the gateway stopped; requeued, and they may reach \
             their recipients twice"
        );
    }

    let shutdown = CancellationToken::new();
    // Channels stop only after the dispatcher has, so no claimed message is left between them.
    let channel_shutdown = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);

    let starter = ChannelStarter {
        events: events_tx,
        shutdown: channel_shutdown.clone(),
        links: metrics.links.clone(),
    };
    let mut handles = Vec::new();
    let mut statuses = Vec::new();
    let mut channel_tasks = JoinSet::new();
    let mut running = HashMap::new();
    for spec in ChannelSpec::all(&settings) {
        let (handle, token) = starter.start(&spec, &mut channel_tasks);
        statuses.push(handle.status.clone());
        handles.push(handle);
        running.insert(spec.name().to_owned(), (spec, token));
    }
    let channel_tasks = Arc::new(tokio::sync::Mutex::new(channel_tasks));
    let registry = ChannelRegistry::new(statuses);

    // libphonenumber compiles its metadata on first use (a second or more): pay that now, not
    // in the first customer's request.
    tokio::task::spawn_blocking(crate::phone::warm_up)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;

    let region = crate::phone::region(settings.defaults.region.as_deref());
    let correlator = Correlator::new(
        store.clone(),
        RetryPolicy::from(&settings.retry),
        region,
        registry.clone(),
        wake.clone(),
    );
    let correlator = tokio::spawn(correlator.run(events_rx, shutdown.clone()));

    let mut tasks = JoinSet::new();
    tasks.spawn(stop_when_broken(store.clone(), shutdown.clone()));
    let dispatcher = Dispatcher::new(store.clone(), handles, wake.clone(), routes);
    let dispatch_changes = dispatcher.changes();
    let token = shutdown.clone();
    tasks.spawn(dispatcher.run(token));
    tasks.spawn(sweep_loop(
        store.clone(),
        settings.store.retention,
        settings.store.reassembly_timeout,
        shutdown.clone(),
    ));

    tasks.spawn(crate::webhook::run_callbacks(
        settings.callbacks.clone(),
        store.clone(),
        shutdown.clone(),
        metrics.webhooks.clone(),
    ));
    let smpp_addr = smpp_listener.as_ref().map(|(_, addr)| *addr);
    let mut smpp_accounts = None;
    if let Some((listener, addr)) = smpp_listener {
        let ctx = ServerContext {
            store: store.clone(),
            wake: wake.clone(),
            defaults: settings.defaults.clone(),
            region,
        };
        let (accounts, reloads) = tokio::sync::watch::channel(settings.smpp.server.account.clone());
        smpp_accounts = Some(accounts);
        tasks.spawn(crate::smpp::server::serve(
            listener,
            settings.smpp.server.clone(),
            ctx,
            shutdown.clone(),
            reloads,
        ));
        tracing::info!(%addr, accounts = settings.smpp.server.account.len(), "SMPP server listening");
    }

    let exported = metrics.registry(store.clone(), registry.clone());
    let state = Arc::new(
        ApiState::new(
            store.clone(),
            wake,
            &settings.http,
            settings.defaults.clone(),
            registry,
        )
        .with_metrics(exported)
        .with_callbacks(crate::webhook::callback::Policy::from_settings(
            &settings.callbacks,
        )),
    );
    let reloader = Reloader {
        current: settings.clone(),
        store: store.clone(),
        api: state.clone(),
        dispatch: dispatch_changes,
        registry: state.channels.clone(),
        starter,
        channel_tasks: channel_tasks.clone(),
        channels: running,
        webhooks: HashMap::new(),
        shutdown: shutdown.clone(),
        webhook_tasks: JoinSet::new(),
        smpp_accounts,
        webhook_metrics: metrics.webhooks.clone(),
    };
    let reload = reloader
        .start_webhooks(&settings.webhooks)
        .spawn(&mut tasks);
    let app = router(state, settings.http.max_body_bytes);
    let limits = crate::http::server::ServerLimits {
        max_connections: settings.http.max_connections,
        header_read_timeout: settings.http.header_read_timeout,
    };
    let http = tokio::spawn(crate::http::server::serve(
        listener,
        app,
        limits,
        shutdown.clone(),
    ));
    tracing::info!(%http_addr, "HTTP API listening");

    Ok(RunningDaemon {
        http_addr,
        smpp_addr,
        store,
        shutdown,
        channel_shutdown,
        tasks,
        channel_tasks,
        correlator,
        http,
        reload,
    })
}

/// Stops the daemon once the store is broken: it refuses every request from then on, and only
/// a restart brings it back (the journal holds everything synced), which a service manager
/// does for a process that exits with an error (`Restart=on-failure` in the unit).
async fn stop_when_broken(store: Store, shutdown: CancellationToken) {
    tokio::select! {
        _ = store.broken() => {
            tracing::error!("the store cannot write: stopping, to be restarted");
            shutdown.cancel();
        }
        _ = shutdown.cancelled() => {}
    }
}

impl RunningDaemon {
    /// Applies new settings in place (see [`crate::reload`]).
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Cancel this token to begin a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for a shutdown to be requested, then performs it in order.
    pub async fn wait(mut self) -> Result<(), DaemonError> {
        self.shutdown.cancelled().await;
        tracing::info!("shutting down: no new requests; handing back unfinished work");
        let http_result = (&mut self.http).await;
        while self.tasks.join_next().await.is_some() {}
        self.channel_shutdown.cancel();
        let mut channel_tasks = self.channel_tasks.lock().await;
        let channels = async { while channel_tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(CHANNEL_STOP_TIMEOUT, channels)
            .await
            .is_err()
        {
            tracing::warn!(
                "channels did not stop in time; their messages are requeued at next start"
            );
            channel_tasks.abort_all();
        }
        drop(channel_tasks);
        let _ = (&mut self.correlator).await;
        self.store.close().await;
        // Also when it broke during the stop itself: the exit status must say so.
        if self
            .store
            .stats()
            .broken
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(DaemonError::StoreFailed);
        }
        tracing::info!("store flushed and closed; bye");
        match http_result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DaemonError::Http(e)),
            Err(e) => Err(DaemonError::Http(std::io::Error::other(e))),
        }
    }
}

/// Pending connections the kernel queues for the API. tokio's default (128) overflows when a few
/// hundred clients connect at once, and each dropped connection attempt waits a second to retry.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Deletes finished messages past their retention, in small batches; stores concatenated
/// inbound messages whose missing parts are overdue, and fails SMPP multi-part submits whose
/// missing parts are; drops receipts and replies no SMPP client took within the retention.
async fn sweep_loop(
    store: Store,
    retention: Duration,
    reassembly_timeout: Duration,
    shutdown: CancellationToken,
) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let reassembly_ms = i64::try_from(reassembly_timeout.as_millis()).unwrap_or(i64::MAX);
    let heartbeat = crate::watchdog::register("store sweep");
    loop {
        heartbeat.beat();
        tokio::select! {
            _ = heartbeat.idle(shutdown.cancelled()) => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match store.expire_queued(now_millis(), SWEEP_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "queued messages past their validity expired"),
            Err(e) => tracing::warn!(error = %e, "expiring queued messages failed; will try again"),
        }
        let started_before = now_millis().saturating_sub(reassembly_ms);
        if let Err(e) = store.expire_assemblies(started_before, SWEEP_BATCH).await {
            tracing::warn!(error = %e, "storing overdue incomplete messages failed; will try again");
        }
        // SMPP clients' multi-part submits wait for their missing parts as long.
        match store
            .expire_submit_assemblies(started_before, SWEEP_BATCH)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                failed = n,
                "multi-part submits whose other parts never came were failed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "failing overdue multi-part submits failed; will try again")
            }
        }
        loop {
            // Each batch is progress: a mass delete may take many.
            heartbeat.beat();
            if shutdown.is_cancelled() {
                return;
            }
            match store
                .sweep(now_millis().saturating_sub(retention_ms), SWEEP_BATCH)
                .await
            {
                Ok(n) if n == SWEEP_BATCH => tokio::task::yield_now().await,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(deleted = n, "retention sweep");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed; will try again");
                    break;
                }
            }
        }
        // Outbox entries no SMPP client took within the retention (its account was removed
        // from the config, or never binds) go too, or the outbox would grow forever.
        let mut dropped = 0;
        loop {
            // Each batch is progress: a mass delete may take many.
            heartbeat.beat();
            if shutdown.is_cancelled() {
                break;
            }
            match store
                .expire_outbox(now_millis().saturating_sub(retention_ms), SWEEP_BATCH)
                .await
            {
                Ok(n) => {
                    dropped += n;
                    if n < SWEEP_BATCH {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiring old outbox entries failed; will try again");
                    break;
                }
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "receipts and replies not delivered within the retention were dropped"
            );
        }
    }
}
