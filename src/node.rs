//! A running node: the storage SCP wired to the instance store and the job queue, with the
//! workers under one supervisor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vcnode_scp::{Peer, ScpConfig, ScpListener, StorageScp};

use crate::config::Config;
use crate::derive::Synthesizer;
use crate::directory::Directory;
use crate::export::Exporter;
use crate::ingest::Ingest;
use crate::pipeline::{Inference, Pipeline};
use crate::queue::Queue;
use crate::store::InstanceStore;
use crate::supervisor::{Stage, Supervisor};

/// Transfer syntaxes offered to senders, in order of preference. Only those whose pixel data
/// this build can decode are accepted (`can_decode_all`), so every accepted image can be
/// processed: native, deflated, JPEG Lossless, JPEG-LS, JPEG 2000 and RLE.
pub const CANDIDATE_TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1",    // Explicit VR Little Endian
    "1.2.840.10008.1.2",      // Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99", // Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.70", // JPEG Lossless, First-Order Prediction (SV1)
    "1.2.840.10008.1.2.4.57", // JPEG Lossless
    "1.2.840.10008.1.2.4.80", // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90", // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    "1.2.840.10008.1.2.5",    // RLE Lossless
];

/// The candidates this build can decode.
pub fn decodable_transfer_syntaxes() -> Vec<String> {
    CANDIDATE_TRANSFER_SYNTAXES
        .iter()
        .filter(|uid| {
            TransferSyntaxRegistry
                .get(uid)
                .is_some_and(|ts| ts.can_decode_all())
        })
        .map(|s| s.to_string())
        .collect()
}

/// The storage SOP classes the node accepts, by C-STORE (at negotiation) and STOW-RS (per
/// instance) alike: mammography and `storage.extra_sop_classes`.
pub fn storage_sop_classes(config: &Config) -> Vec<String> {
    let mut classes = vec![
        vcnode_scp::MG_FOR_PRESENTATION.to_string(),
        vcnode_scp::MG_FOR_PROCESSING.to_string(),
    ];
    classes.extend(config.storage.extra_sop_classes.iter().cloned());
    classes
}

/// Builds the SCP's configuration from the node's; data sets spool into the store's temporary folder.
pub fn scp_config(config: &Config, store: &InstanceStore) -> ScpConfig {
    let storage_sop_classes = storage_sop_classes(config);
    ScpConfig {
        ae_title: config.node.ae_title.clone(),
        // The file's enabled peers; `serve` replaces them with the live directory's list.
        peers: vcnode_scp::peer_list(
            config
                .peers
                .iter()
                .filter(|p| p.enabled)
                .map(|p| Peer {
                    ae_title: p.ae_title.clone(),
                    host: p.host,
                })
                .collect(),
        ),
        storage_sop_classes,
        transfer_syntaxes: decodable_transfer_syntaxes(),
        max_associations: config.node.max_associations,
        max_pending: config.node.max_pending_associations,
        max_pdu_length: config.node.max_pdu_length,
        artim_timeout: config.artim_timeout(),
        idle_timeout: config.idle_timeout(),
        association_lifetime: Duration::from_secs(config.node.association_lifetime_s),
        max_data_set_bytes: config.storage.max_instance_mb.saturating_mul(1 << 20),
        spool_dir: store.spool_dir(),
        implementation_class_uid: crate::store::IMPLEMENTATION_CLASS_UID.into(),
        implementation_version_name: crate::store::IMPLEMENTATION_VERSION_NAME.into(),
    }
}

/// Runs the node until SIGINT or SIGTERM, then shuts down in order: the SCP stops accepting and
/// drains its associations (bounded), workers finish their item or release its lease, the model
/// thread stops, and only then the database closes.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Patient data: whatever the node creates (files, folders, the database and its journal)
    // is for its own user only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // glibc raises its mmap threshold (up to 32 MiB) after large blocks are freed, so a 27 MB
    // mammogram buffer then lands in a per-thread heap arena that is never given back, and the
    // node's memory grows with every blocking-pool thread that ever held an image. A fixed
    // threshold keeps image-sized buffers in mmap, returned to the system when freed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the worker threads start.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    // Registered first, so that a signal that arrives during start-up is not lost.
    let shutdown = CancellationToken::new();
    let signals = shutdown_signal(shutdown.clone())?;
    // Whatever path leaves this function, the supervised tasks are told to stop.
    let _stop_all = shutdown.clone().drop_guard();

    #[cfg(feature = "fault-hooks")]
    warn!("this is a test build: it has fault hooks that can abort the process (feature fault-hooks)");
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let store = InstanceStore::open(data_dir)
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let queue = Queue::open(data_dir)
        .await
        .context("cannot open the job database")?;
    let orphaned = queue.expire_leases_of_previous_run().await?;
    if orphaned > 0 {
        warn!(
            leases = orphaned,
            "leases left by a previous run that did not stop cleanly: each counts as a worker death"
        );
    }
    let counts = queue.job_counts().await?;
    info!(data_dir = %data_dir.display(), jobs = ?counts, "store and queue open");
    // Peers, destinations and routes: the file seeds the database's directory, which the
    // admin API and CLI change while the node runs.
    let directory = Arc::new(
        Directory::open_seeded(queue.pool().clone(), &config)
            .await
            .context("[[peers]], [[destinations]] and [[routes]]")?,
    );
    let live = directory.live().clone();

    let mut scp = scp_config(&config, &store);
    scp.peers = live.scp_peers();
    let addr = SocketAddr::new(config.node.bind, config.node.dimse_port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let tls_listener = dicom_tls_listener(&config).await?;

    let metrics = crate::metrics::install().context("metrics recorder")?;
    let readiness = Arc::new(crate::web::health::Readiness::default());

    let grace = config.jobs.shutdown_grace();
    let mut supervisor = Supervisor::new(shutdown.clone(), grace + Duration::from_secs(5));
    let wake = Arc::new(Notify::new());
    match crate::pipeline::load_model(&config.inference)? {
        Some(model) => {
            let ood = crate::pipeline::OodGuard::for_model(config.inference.ood, &model)?;
            readiness
                .model_loaded
                .store(true, std::sync::atomic::Ordering::Release);
            let spec = model.manifest.input;
            let synth = Synthesizer {
                model_id: model.manifest.model_id(),
                weights_sha256: model.manifest.weights.sha256.clone(),
                burn_in_label: config.inference.burn_in_label,
            };
            let (inference, model_thread) = Inference::new(
                model,
                config.inference.max_batch,
                Duration::from_millis(config.inference.max_wait_ms),
            );
            supervisor.spawn_blocking("model thread", Stage::Model, move |stop| model_thread.run(stop));
            let pipeline = Pipeline {
                queue: queue.leases(),
                store: store.clone(),
                spec,
                synth,
                inference,
                lease: Duration::from_secs(config.jobs.lease_s),
                retry: config.jobs.retry_policy(),
                shutdown_grace: grace,
                attention_map: config.inference.attention_map,
                // The live routes: a route changed through the admin API applies to the next result.
                routes: {
                    let live = live.clone();
                    Arc::new(move |ae: Option<&str>| live.destinations_for(ae))
                },
                export_max_attempts: config.export.max_attempts,
                min_free_bytes: config.storage.min_free_mb.saturating_mul(1 << 20),
                wake: wake.clone(),
                ood,
            };
            Arc::new(pipeline).start(&mut supervisor, config.jobs.workers);
        }
        None => warn!("[inference] model is empty: images are stored and queued, not processed"),
    }

    let entries = live.snapshot();
    if !entries.peers.iter().any(|p| p.def.enabled) {
        warn!("no enabled peers: every association will be rejected until one is added (/api/peers, vcnode peers add)");
    }
    // Started even without destinations: the admin API can add some at any time.
    Arc::new(Exporter::new(&config, queue.leases(), live.clone())?)
        .start(&mut supervisor, config.export.workers);
    info!(
        peers = entries.peers.len(),
        destinations = entries.destinations.len(),
        routes = entries.routes.len(),
        "directory loaded; export workers started"
    );
    directory.watch(&mut supervisor);
    let (audit, audit_writer) =
        crate::web::auth::audit_log(crate::web::auth::AuthStore::new(queue.pool().clone()));
    supervisor.spawn("audit writer", Stage::Upkeep, move |stop| {
        let writer = audit_writer.clone();
        async move { writer.run(stop).await }
    });
    // Histogram samples wait in buffers until folded into buckets: fold them now and then
    // even when nothing scrapes.
    supervisor.spawn("metrics upkeep", Stage::Upkeep, {
        let metrics = metrics.clone();
        move |stop| {
            let metrics = metrics.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = every.tick() => metrics.run_upkeep(),
                    }
                }
            }
        }
    });
    let supervised = tokio::spawn(supervisor.run());

    // The one ingest, for C-STORE and STOW-RS alike.
    let ingest = Arc::new(Ingest {
        store: store.clone(),
        queue: queue.clone(),
        select: config.jobs.select,
        max_attempts: config.jobs.max_attempts,
        min_free_bytes: config.storage.min_free_mb.saturating_mul(1 << 20),
        limits: config.ingest_limits(),
        wake,
        in_flight: Default::default(),
    });
    let http_addr = SocketAddr::new(config.node.bind, config.node.http_port);
    let http_listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen on {http_addr} (node.http_port)"))?;
    let http_local = http_listener.local_addr()?;
    let web = Arc::new(crate::web::WebState {
        config: Arc::new(config.clone()),
        store: store.clone(),
        queue: queue.clone(),
        ingest: ingest.clone(),
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        directory: directory.clone(),
        audit,
    });
    // HTTPS: the certificate and key are read now, so a bad file stops start-up.
    let https = match (&config.node.tls, config.node.http_tls) {
        (Some(tls), true) => Some(
            vcnode_scp::tls::https_acceptor(&tls.cert_file, &tls.key_file)
                .context("[node.tls] for HTTPS (node.http_tls)")?,
        ),
        _ => None,
    };
    let http = tokio::spawn(crate::web::serve(http_listener, https, web, shutdown.clone()));

    info!(transfer_syntaxes = ?scp.transfer_syntaxes, "accepted transfer syntaxes");
    let local = listener.local_addr()?;
    info!(ae_title = %config.node.ae_title, %local, "DIMSE storage SCP listening");
    // Plain lines on stdout for scripts and tests that start the node on port 0 (the DIMSE
    // line last: once it is printed, both doors are open).
    let scheme = config.http_scheme();
    println!("vcnode DICOMweb on {scheme}://{http_local}/dicomweb");
    // The viewer (OHIF) is optional: without it the DICOMweb API still serves.
    match config.dicomweb.viewer_root() {
        Some(root) => {
            // A browser on this machine cannot open the wildcard address: name the host.
            let host = if http_local.ip().is_unspecified() {
                format!("localhost:{}", http_local.port())
            } else {
                http_local.to_string()
            };
            info!(viewer = %root.display(), url = %format!("{scheme}://{host}/"), "OHIF viewer installed");
            println!("vcnode viewer on {scheme}://{host}/");
        }
        None => warn!(
            "OHIF viewer not installed ([dicomweb] viewer_dir); run scripts/fetch-viewer.sh to serve it at /"
        ),
    }
    let mut listeners = vec![ScpListener::plain(listener)];
    if let Some(tls) = tls_listener {
        let tls_local = tls.listener.local_addr()?;
        info!(ae_title = %config.node.ae_title, local = %tls_local, "DICOM TLS storage SCP listening");
        // Not "listening on": scripts take that line for the plain DIMSE port.
        println!("vcnode {} DICOM TLS on {tls_local}", config.node.ae_title);
        listeners.push(tls);
    }
    println!("vcnode {} listening on {local}", config.node.ae_title);

    readiness
        .scp_listening
        .store(true, std::sync::atomic::Ordering::Release);
    let served = StorageScp::new(scp, ingest)
        .with_observer(Arc::new(crate::metrics::ScpMetrics))
        .serve_listeners(listeners, shutdown.clone().cancelled_owned())
        .await;
    readiness
        .scp_listening
        .store(false, std::sync::atomic::Ordering::Release);
    // The SCP has drained (or failed): the HTTP server and the workers stop now if they have not yet.
    shutdown.cancel();
    match http.await {
        Ok(Err(e)) => warn!(error = %e, "the DICOMweb server failed"),
        Err(e) => warn!(error = %e, "the DICOMweb server ended abnormally"),
        Ok(Ok(())) => {}
    }
    signals.abort();
    if let Err(e) = supervised.await {
        warn!(error = %e, "the supervisor ended abnormally");
    }
    queue.close().await;
    served?;
    info!("vcnode stopped");
    Ok(())
}

/// The DICOM TLS port (`node.dimse_tls_port` with `[node.tls]`), if configured: its certificate
/// and key are read now, so a bad file stops start-up rather than every handshake.
async fn dicom_tls_listener(config: &Config) -> anyhow::Result<Option<ScpListener>> {
    let (Some(port), Some(tls)) = (config.node.dimse_tls_port, &config.node.tls) else {
        return Ok(None);
    };
    let acceptor = vcnode_scp::tls::acceptor(&tls.files()).context("[node.tls]")?;
    let addr = SocketAddr::new(config.node.bind, port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (node.dimse_tls_port)"))?;
    info!(
        client_certificates = if tls.client_ca_file.is_some() {
            "required"
        } else {
            "not asked for"
        },
        "DICOM TLS configured"
    );
    Ok(Some(ScpListener::tls(listener, acceptor)))
}

/// Cancels `shutdown` at the first SIGINT or SIGTERM.
fn shutdown_signal(shutdown: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT: shutting down"),
            _ = term.recv() => info!("SIGTERM: shutting down"),
        }
        shutdown.cancel();
    }))
}
