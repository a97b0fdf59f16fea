//! Delivery of derived instances to the configured destinations: C-STORE over DIMSE (one
//! association per series) or STOW-RS. Each (instance, destination) is an export row with its
//! own attempts and backoff with jitter; a permanent refusal, the last attempt or too great an
//! age makes it dead with the reason. A dead destination never blocks the others, and an
//! acknowledged export is never sent again (its row is done).

mod dimse;
mod stow;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, DestinationConfig, DestinationKind};
use crate::directory::Live;
use crate::queue::{keep_leases, ExportBatch, ExportItem, Kind, LeaseQueue, RetryPolicy, State};
use crate::supervisor::{Stage, Supervisor};

/// What a destination said about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored; with the warning text if the destination returned one.
    Stored(Option<String>),
    /// Not stored; `permanent` when retrying cannot help (a refusal, not an outage).
    Failed { reason: String, permanent: bool },
}

/// Shared state of the export workers.
pub struct Exporter {
    pub queue: Arc<dyn LeaseQueue>,
    pub data_dir: PathBuf,
    /// The destinations as the directory says now: one changed or added through the admin
    /// API is used by the next batch, one removed fails its exports (dead).
    pub destinations: Live,
    pub calling_ae_title: String,
    pub max_age: Duration,
    pub batch: usize,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// At shutdown, how long a batch may finish before its leases are released.
    pub shutdown_grace: Duration,
    /// Time limits of every exchange with a destination (floor, slowest accepted rate).
    pub limits: dimse::Limits,
    /// One HTTP client per DICOMweb destination, each trusting only its own extra CA, with
    /// the definition it was built for (a changed destination gets a new one).
    pub http: Mutex<HashMap<String, (DestinationConfig, reqwest::Client)>>,
}

/// The time limits of exports, from `[export]`.
fn limits(config: &Config) -> dimse::Limits {
    dimse::Limits {
        floor: config.export.timeout(),
        min_bytes_per_s: config.export.min_bytes_per_s(),
    }
}

/// The HTTP client of a DICOMweb destination, trusting only its own extra CA
/// ([`crate::dicomweb_client::client`]).
fn http_client(d: &DestinationConfig, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let peer = crate::dicomweb_client::Peer {
        role: "destination",
        name: &d.name,
        url: d.url.as_deref().unwrap_or(""),
        tls: d.tls.as_ref(),
    };
    Ok(crate::dicomweb_client::client(peer, timeout)?)
}

impl Exporter {
    /// The exporter of a node whose destinations are `destinations` (the live directory). The
    /// HTTP clients of the DICOMweb destinations known now are built at once, so a bad CA
    /// file of one stops start-up as before.
    pub fn new(config: &Config, queue: Arc<dyn LeaseQueue>, destinations: Live) -> anyhow::Result<Exporter> {
        let timeout = config.export.timeout();
        let mut http = HashMap::new();
        for d in destinations.snapshot().destinations.iter().map(|e| &e.def) {
            if d.kind == DestinationKind::Dicomweb {
                http.insert(d.name.clone(), (d.clone(), http_client(d, timeout)?));
            }
        }
        Ok(Exporter {
            queue,
            data_dir: config.node.data_dir.clone(),
            destinations,
            calling_ae_title: config.node.ae_title.clone(),
            max_age: Duration::from_secs(config.export.max_age_s),
            batch: config.export.batch,
            timeout,
            retry: config.export.retry_policy(),
            shutdown_grace: config.jobs.shutdown_grace(),
            limits: limits(config),
            http: Mutex::new(http),
        })
    }

    /// The HTTP client for `dest` as defined now: the cached one, or a new one when the
    /// destination is new or its definition changed.
    fn client_for(&self, dest: &DestinationConfig) -> anyhow::Result<reqwest::Client> {
        let mut http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_for, client)) = http.get(&dest.name) {
            if built_for == dest {
                return Ok(client.clone());
            }
        }
        let client = http_client(dest, self.timeout)?;
        http.insert(dest.name.clone(), (dest.clone(), client.clone()));
        Ok(client)
    }

    /// Starts `workers` export loops under the supervisor, which replaces one that panics.
    pub fn start(self: Arc<Self>, supervisor: &mut Supervisor, workers: usize) {
        for w in 0..workers.max(1) {
            let e = self.clone();
            supervisor.spawn(format!("export worker {w}"), Stage::Work, move |stop| {
                let e = e.clone();
                let owner = format!("{}-x{w}", uuid::Uuid::new_v4().simple());
                async move { e.worker(owner, stop).await }
            });
        }
    }

    /// The lease on a batch; renewed while it is sent, so it expires only if the process dies.
    fn lease(&self) -> Duration {
        (self.timeout * 4).max(Duration::from_secs(15))
    }

    async fn worker(&self, owner: String, stop: CancellationToken) {
        while !stop.is_cancelled() {
            // Not raced against `stop`: a claim dropped mid-commit would leave leases behind.
            let pause = match self
                .queue
                .claim_exports(&owner, self.lease(), self.batch, &self.retry)
                .await
            {
                Ok(Some(batch)) => {
                    self.deliver(batch, &stop).await;
                    continue;
                }
                Ok(None) => Duration::from_millis(250),
                Err(e) => {
                    warn!(error = %e, "cannot claim exports");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends a claimed batch and records each instance's outcome as the destination answers it;
    /// at shutdown, lets the batch go on for the grace period, then releases what is unanswered.
    async fn deliver(&self, batch: ExportBatch, stop: &CancellationToken) {
        let ids: Vec<i64> = batch.items.iter().map(|i| i.id).collect();
        let renewal = keep_leases(
            self.queue.clone(),
            Kind::Export,
            batch.owner.clone(),
            ids.clone(),
            self.lease(),
        );
        let (report, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
        let sending = self.send(&batch, report);
        tokio::pin!(sending);
        let (mut sent, mut grace_ends) = (false, None);
        let mut answered = vec![false; ids.len()];
        loop {
            tokio::select! {
                _ = &mut sending, if !sent => sent = true,
                outcome = outcomes.recv() => match outcome {
                    Some((i, outcome)) => {
                        if let Some(item) = batch.items.get(i) {
                            self.record(&batch, item, outcome).await;
                            answered[i] = true;
                        }
                    }
                    // The sender is gone: the batch is over.
                    None => break,
                },
                _ = stop.cancelled(), if grace_ends.is_none() => {
                    grace_ends = Some(tokio::time::Instant::now() + self.shutdown_grace);
                }
                _ = tokio::time::sleep_until(grace_ends.unwrap_or_else(tokio::time::Instant::now)), if grace_ends.is_some() => break,
            }
        }
        drop(renewal);
        let unanswered: Vec<i64> = ids
            .iter()
            .zip(&answered)
            .filter(|(_, a)| !**a)
            .map(|(id, _)| *id)
            .collect();
        if unanswered.is_empty() {
            return;
        }
        match self.queue.release(Kind::Export, &batch.owner, &unanswered).await {
            Ok(n) => info!(destination = %batch.destination, released = n, "shutdown: exports released"),
            Err(e) => warn!(error = %e, "shutdown: cannot release exports; their leases will expire"),
        }
    }

    /// Sends the batch, reporting each item's outcome (by index) on `report`.
    async fn send(&self, batch: &ExportBatch, report: UnboundedSender<(usize, Outcome)>) {
        let all = |outcomes: Vec<Outcome>| {
            for (i, o) in outcomes.into_iter().enumerate() {
                let _ = report.send((i, o));
            }
        };
        let refuse = |reason: String| {
            batch
                .items
                .iter()
                .map(|_| Outcome::Failed {
                    reason: reason.clone(),
                    permanent: true,
                })
                .collect()
        };
        let Some(dest) = self.destinations.destination(&batch.destination) else {
            return all(refuse(format!(
                "destination {:?} is no longer configured (removed from the directory)",
                batch.destination
            )));
        };
        let dest = &dest;
        let files: Vec<PathBuf> = batch.items.iter().map(|i| self.data_dir.join(&i.path)).collect();
        match dest.kind {
            DestinationKind::Dimse => {
                dimse::send(dest, &self.calling_ae_title, &files, self.limits, &report).await
            }
            DestinationKind::Dicomweb => {
                let uids: Vec<&str> = batch.items.iter().map(|i| i.instance_uid.as_str()).collect();
                match self.client_for(dest) {
                    Ok(http) => all(stow::send(&http, dest, &files, &uids, self.limits).await),
                    // E.g. its CA file is gone: retried, as fixing the file or the destination
                    // lets the export through.
                    Err(e) => all(batch
                        .items
                        .iter()
                        .map(|_| Outcome::Failed {
                            reason: format!("{e:#}"),
                            permanent: false,
                        })
                        .collect()),
                }
            }
        }
    }

    async fn record(&self, batch: &ExportBatch, item: &ExportItem, outcome: Outcome) {
        let dest = &batch.destination;
        let result = match &outcome {
            Outcome::Stored(note) => {
                info!(destination = %dest, instance = %item.instance_uid, warning = note.as_deref().unwrap_or(""), "exported");
                metrics::counter!(crate::metrics::EXPORT_ATTEMPTS, "destination" => dest.clone(), "outcome" => "stored")
                    .increment(1);
                metrics::histogram!(crate::metrics::EXPORT_LATENCY, "destination" => dest.clone())
                    .record(crate::metrics::seconds_since(item.created_at));
                self.queue
                    .export_done(item.id, &batch.owner, note.as_deref())
                    .await
                    .map(|_| ())
            }
            Outcome::Failed { reason, permanent } => {
                metrics::counter!(crate::metrics::EXPORT_ATTEMPTS, "destination" => dest.clone(), "outcome" => "failed")
                    .increment(1);
                let too_old = crate::queue::now_ms() - item.created_at > self.max_age.as_millis() as i64;
                let reason = if too_old && !permanent {
                    format!("{reason} (older than export.max_age_s)")
                } else {
                    reason.clone()
                };
                let backoff = self.retry.backoff(item.attempt);
                let state = self
                    .queue
                    .fail(
                        Kind::Export,
                        &batch.owner,
                        item.id,
                        &reason,
                        *permanent || too_old,
                        backoff,
                    )
                    .await;
                if let Ok(state) = &state {
                    warn!(destination = %dest, instance = %item.instance_uid, attempt = item.attempt,
                          state = state.map(State::as_str).unwrap_or("lease lost"),
                          retry_in_s = backoff.as_secs(), %reason, "export failed");
                }
                state.map(|_| ())
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "cannot record an export outcome");
        }
    }
}

/// `vcnode destinations check`: C-ECHO or a QIDO-RS request per destination.
pub async fn check(
    config: &Config,
    destinations: &[DestinationConfig],
) -> Vec<(String, Result<String, String>)> {
    let limits = limits(config);
    let mut out = Vec::new();
    for d in destinations {
        let r = match d.kind {
            DestinationKind::Dimse => dimse::echo(d, &config.node.ae_title, limits).await,
            DestinationKind::Dicomweb => match http_client(d, config.export.timeout()) {
                Ok(client) => stow::qido(&client, d, limits.floor).await,
                Err(e) => Err(format!("{e:#}")),
            },
        };
        out.push((d.name.clone(), r));
    }
    out
}
