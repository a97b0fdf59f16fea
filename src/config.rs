//! Configuration: embedded defaults (`conf/vcnode.toml`), an optional file, then environment
//! variables `VCNODE__SECTION__KEY`. Anything invalid stops start-up with the key and reason.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vcnode_models::DeviceRequest;

/// The defaults, compiled in so the binary runs without any file.
pub const DEFAULTS: &str = include_str!("../conf/vcnode.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    pub storage: StorageConfig,
    pub jobs: JobsConfig,
    pub inference: InferenceConfig,
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    pub export: ExportConfig,
    pub dicomweb: DicomwebConfig,
    /// DICOMweb PACSs that studies can be pulled from for processing (`vcnode pull`).
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Who may use the HTTP side (src/web/auth.rs).
    pub auth: HttpAuthConfig,
}

/// `[auth]`: authentication on the HTTP port (API tokens, users, sessions).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuthConfig {
    /// Every `/dicomweb` and `/api` request needs a token or a session, and the viewer a
    /// sign-in. false: anonymous requests may do everything (a lab without patient data).
    pub required: bool,
    /// `/healthz`, `/readyz` and `/metrics` answer without credentials (monitoring); false:
    /// they need a reader or an admin.
    pub open_health: bool,
    /// How long a sign-in lasts.
    pub session_hours: u64,
    /// Failed sign-ins or unknown tokens per client address and minute; past it: 429.
    pub failures_per_minute: u32,
}

/// The DICOMweb server under `/dicomweb` on `node.http_port`, and the viewer beside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomwebConfig {
    /// The sender name STOW-RS requests are routed by (`[[routes]] from_ae`), as a calling AE
    /// title routes C-STOREs.
    pub sender: String,
    /// Other origins allowed to call `/dicomweb` from a browser (a viewer served elsewhere);
    /// empty: same origin only.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// The OHIF viewer's built files, served at `/` when the folder exists. A relative path is
    /// taken from the working directory, then from the source checkout.
    pub viewer_dir: PathBuf,
    /// The largest STOW-RS request body, in MiB.
    pub max_request_mb: u64,
}

impl DicomwebConfig {
    /// The viewer's folder if it is installed. A relative path is looked up in the working
    /// directory, then in the source checkout (so `make run` and `cargo run` find
    /// `viewer/ohif` from anywhere), as [`InferenceConfig::model_manifest`] finds the model.
    pub fn viewer_root(&self) -> Option<PathBuf> {
        if self.viewer_dir.as_os_str().is_empty() {
            return None;
        }
        let candidates = if self.viewer_dir.is_absolute() {
            vec![self.viewer_dir.clone()]
        } else {
            vec![
                self.viewer_dir.clone(),
                Path::new(env!("CARGO_MANIFEST_DIR")).join(&self.viewer_dir),
            ]
        };
        candidates
            .into_iter()
            .find(|dir| dir.join("index.html").is_file())
    }
}

/// A DICOMweb PACS that studies are pulled from (QIDO-RS to find, WADO-RS to retrieve).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    /// The DICOMweb root, e.g. `https://pacs.example.org/dicom-web`.
    pub url: String,
    pub auth: Option<AuthConfig>,
    pub tls: Option<TlsConfig>,
    /// Allows `auth` over plain http:// (credentials would cross the network in clear text).
    #[serde(default)]
    pub allow_insecure_auth: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    Dimse,
    Dicomweb,
}

/// Where derived instances can be sent. Seeds the directory ([`crate::directory`]), which the
/// admin API edits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    pub kind: DestinationKind,
    pub ae_title: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub url: Option<String>,
    /// For `https://` DICOMweb destinations: trust settings beyond the system's CA store.
    pub tls: Option<TlsConfig>,
    pub auth: Option<AuthConfig>,
    /// Credentials over plain `http://` are refused at start-up unless this is true (e.g. a
    /// PACS on the same host, or behind a TLS-terminating tunnel).
    #[serde(default)]
    pub allow_insecure_auth: bool,
}

/// TLS settings of a peer. For an `https://` DICOMweb peer the server certificate is checked
/// against the system's CA store, Mozilla's roots and, if given, `ca_file` (a hospital's own
/// CA). A `dimse` destination with `tls` speaks DICOM TLS and trusts `ca_file` alone.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the destination's certificate.
    pub ca_file: Option<PathBuf>,
    /// DICOM TLS only: the client certificate (PEM) presented to the destination; absent: the
    /// node's own `[node.tls]` certificate, if there is one.
    pub cert_file: Option<PathBuf>,
    /// DICOM TLS only: the private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// DICOM TLS only: the name the destination's certificate must carry; absent: `host`.
    pub server_name: Option<String>,
}

/// DICOMweb credentials. Their Debug output hides the secrets; the admin API shows them as
/// [`AuthConfig::HIDDEN`].
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub bearer: Option<String>,
    /// `user:password`
    pub basic: Option<String>,
}

impl AuthConfig {
    /// What a secret is shown as.
    pub const HIDDEN: &'static str = "***";

    /// The same kind of credential with the secret replaced by [`AuthConfig::HIDDEN`].
    pub fn hidden(&self) -> AuthConfig {
        let hide = |s: &Option<String>| s.as_ref().map(|_| Self::HIDDEN.to_string());
        AuthConfig {
            bearer: hide(&self.bearer),
            basic: hide(&self.basic),
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = self.hidden();
        f.debug_struct("AuthConfig")
            .field("bearer", &hidden.bearer)
            .field("basic", &hidden.basic)
            .finish()
    }
}

/// Results of images from `from_ae` ("*": any sender) go to the destinations named in `to`.
/// One route per `from_ae`. Seeds the directory ([`crate::directory`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub from_ae: String,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    pub max_attempts: u32,
    pub max_age_s: u64,
    pub workers: usize,
    pub batch: usize,
    pub timeout_s: u64,
    /// The slowest transfer accepted, in kbit/s: sending N bytes may take
    /// `timeout_s + N / rate` before the export fails (a destination that stopped reading).
    pub min_rate_kbps: u64,
    /// The first retry's delay; each further retry doubles it, up to `retry_cap_s` (jitter:
    /// up to a quarter less).
    pub retry_base_ms: u64,
    pub retry_cap_s: u64,
}

impl ExportConfig {
    pub fn retry_policy(&self) -> crate::queue::RetryPolicy {
        crate::queue::RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            cap: Duration::from_secs(self.retry_cap_s),
        }
    }

    /// The floor of every export exchange: connecting, negotiating, each response.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    /// [`ExportConfig::min_rate_kbps`] in bytes per second.
    pub fn min_bytes_per_s(&self) -> u64 {
        self.min_rate_kbps.saturating_mul(1000) / 8
    }
}

impl Config {
    /// "https" when the HTTP port speaks HTTPS (`node.http_tls`), else "http".
    pub fn http_scheme(&self) -> &'static str {
        if self.node.http_tls {
            "https"
        } else {
            "http"
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub ae_title: String,
    pub bind: IpAddr,
    pub dimse_port: u16,
    /// DICOM TLS port of the storage SCP, beside `dimse_port` (0: any free port); absent: no
    /// DICOM TLS. Needs `[node.tls]`.
    pub dimse_tls_port: Option<u16>,
    /// The node's certificate for DICOM TLS and HTTPS.
    pub tls: Option<NodeTlsConfig>,
    pub http_port: u16,
    /// HTTPS instead of HTTP on `http_port`, with the `[node.tls]` certificate.
    #[serde(default)]
    pub http_tls: bool,
    pub data_dir: PathBuf,
    pub max_associations: usize,
    pub max_pending_associations: usize,
    pub max_pdu_length: u32,
    pub artim_timeout_s: u64,
    pub idle_timeout_s: u64,
    pub association_lifetime_s: u64,
}

/// `[node.tls]`: the node's own certificate (PEM files), and the CA that client certificates
/// must chain to when they are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, DICOM TLS clients must present a certificate signed by a CA in this file
    /// (IHE ATNA: mutual authentication of nodes).
    pub client_ca_file: Option<PathBuf>,
}

impl NodeTlsConfig {
    /// The node's certificate and key, as a TLS client presents them.
    pub fn identity(&self) -> vcnode_scp::tls::Identity {
        vcnode_scp::tls::Identity {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }

    pub fn files(&self) -> vcnode_scp::tls::TlsFiles {
        vcnode_scp::tls::TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_ca_file: self.client_ca_file.clone(),
        }
    }
}

/// An AE title allowed to send, from `host` if given. One entry per AE title. Seeds the
/// directory ([`crate::directory`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub ae_title: String,
    pub host: Option<IpAddr>,
    /// A disabled peer cannot start an association; it stays listed.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub extra_sop_classes: Vec<String>,
    pub min_free_mb: u64,
    pub max_instance_mb: u64,
    pub max_pixel_mb: u64,
    pub max_sequence_depth: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSelect {
    LowEnergy,
    MgPresentation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    pub select: JobSelect,
    pub max_attempts: u32,
    pub lease_s: u64,
    pub workers: usize,
    /// The first retry's delay; each further retry doubles it, up to `retry_cap_s`.
    pub retry_base_ms: u64,
    pub retry_cap_s: u64,
    /// At shutdown, how long job and export workers may finish their current item before
    /// they release it.
    pub shutdown_grace_s: u64,
}

impl JobsConfig {
    pub fn retry_policy(&self) -> crate::queue::RetryPolicy {
        crate::queue::RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            cap: Duration::from_secs(self.retry_cap_s),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    #[serde(deserialize_with = "de_from_str")]
    pub device: DeviceRequest,
    /// A CUDA torch 2.11 `torch/lib` folder to load libtorch_cuda.so from ("" = search).
    pub torch_lib: PathBuf,
    #[serde(deserialize_with = "de_from_str")]
    pub precision: vcnode_models::model::Precision,
    pub model: PathBuf,
    pub max_batch: usize,
    pub max_wait_ms: u64,
    pub burn_in_label: bool,
    pub attention_map: bool,
    /// What the out-of-distribution guard does with an LE image unlike the model's training
    /// inputs.
    #[serde(deserialize_with = "de_from_str")]
    pub ood: OodAction,
}

/// `[inference] ood`: what becomes of an LE image the out-of-distribution guard
/// ([`vcnode_models::ood`]) finds unlike the model's training inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OodAction {
    /// Synthesize it, with a burned-in warning and the score in the Derivation Description.
    Flag,
    /// Make no synthetic image: the job ends done, its outcome saying why.
    Refuse,
    /// No guard.
    Off,
}

impl std::str::FromStr for OodAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "flag" => Ok(OodAction::Flag),
            "refuse" => Ok(OodAction::Refuse),
            "off" => Ok(OodAction::Off),
            other => Err(format!("invalid ood {other:?}: expected flag, refuse or off")),
        }
    }
}

impl OodAction {
    /// As `[inference] ood` spells it.
    pub fn name(self) -> &'static str {
        match self {
            OodAction::Flag => "flag",
            OodAction::Refuse => "refuse",
            OodAction::Off => "off",
        }
    }

    /// The `action` label of the out-of-distribution counter.
    pub fn as_str(self) -> &'static str {
        match self {
            OodAction::Flag => "flagged",
            OodAction::Refuse => "refused",
            OodAction::Off => "off",
        }
    }
}

impl InferenceConfig {
    /// `torch_lib`, when set.
    pub fn torch_lib(&self) -> Option<&Path> {
        Some(self.torch_lib.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// The model manifest, or None when processing is off. A relative path is looked up in the
    /// working directory, then in the source checkout (so `cargo run` works from anywhere).
    pub fn model_manifest(&self) -> Option<PathBuf> {
        if self.model.as_os_str().is_empty() {
            return None;
        }
        if self.model.is_absolute() || self.model.exists() {
            return Some(self.model.clone());
        }
        let in_checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join(&self.model);
        Some(if in_checkout.exists() {
            in_checkout
        } else {
            self.model.clone()
        })
    }
}

fn de_from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

impl Config {
    /// Loads defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid("--config", format!("{} does not exist", path.display())));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("VCNODE__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("VCNODE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let config: Config = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_ae_title("node.ae_title", &self.node.ae_title)?;
        // Peers, destinations and routes: the one validation the admin API uses too.
        crate::directory::validate(
            &self.peers,
            &self.destinations,
            &self.routes,
            crate::directory::KeyStyle::Index,
        )?;
        if self.node.max_associations == 0 {
            return Err(invalid("node.max_associations", "must be at least 1"));
        }
        // PS3.8: the receive limit must hold a PDU header and some data; 0 would mean "unlimited".
        if !(4096..=16 * 1024 * 1024).contains(&self.node.max_pdu_length) {
            return Err(invalid(
                "node.max_pdu_length",
                "must be between 4096 and 16777216 bytes",
            ));
        }
        if self.node.artim_timeout_s == 0
            || self.node.idle_timeout_s == 0
            || self.node.association_lifetime_s == 0
        {
            return Err(invalid(
                "node.artim_timeout_s/idle_timeout_s/association_lifetime_s",
                "must be at least 1 second",
            ));
        }
        if let Some(port) = self.node.dimse_tls_port {
            if self.node.tls.is_none() {
                return Err(invalid(
                    "node.dimse_tls_port",
                    "DICOM TLS needs the node's certificate: set [node.tls] cert_file and key_file",
                ));
            }
            if port != 0 && port == self.node.dimse_port {
                return Err(invalid(
                    "node.dimse_tls_port",
                    "must differ from node.dimse_port (DICOM TLS has its own port)",
                ));
            }
        }
        if self.node.http_tls && self.node.tls.is_none() {
            return Err(invalid(
                "node.http_tls",
                "HTTPS needs the node's certificate: set [node.tls] cert_file and key_file",
            ));
        }
        if let Some(tls) = &self.node.tls {
            let files = [
                ("node.tls.cert_file", Some(&tls.cert_file)),
                ("node.tls.key_file", Some(&tls.key_file)),
                ("node.tls.client_ca_file", tls.client_ca_file.as_ref()),
            ];
            for (key, path) in files {
                if let Some(path) = path.filter(|p| !p.is_file()) {
                    return Err(invalid(key, format!("{} is not a readable file", path.display())));
                }
            }
        }
        if self.node.max_pending_associations == 0 {
            return Err(invalid("node.max_pending_associations", "must be at least 1"));
        }
        if self.storage.max_instance_mb == 0 || self.storage.max_pixel_mb == 0 {
            return Err(invalid(
                "storage.max_instance_mb/max_pixel_mb",
                "must be at least 1",
            ));
        }
        if !(1..=256).contains(&self.storage.max_sequence_depth) {
            return Err(invalid("storage.max_sequence_depth", "must be between 1 and 256"));
        }
        for (i, uid) in self.storage.extra_sop_classes.iter().enumerate() {
            if !vcnode_scp::is_valid_uid(uid) {
                return Err(invalid(
                    format!("storage.extra_sop_classes[{i}]"),
                    format!("{uid:?} is not a UID"),
                ));
            }
        }
        if self.jobs.max_attempts == 0 {
            return Err(invalid("jobs.max_attempts", "must be at least 1"));
        }
        // A source's name is the calling AE title its pulled instances are recorded and routed
        // by (`[[routes]] from_ae`), and goes into their file meta as Source AE Title (AE VR).
        let mut source_names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            check_ae_title(&format!("{key}.name"), &s.name)?;
            if !source_names.insert(s.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is used twice", s.name),
                ));
            }
            check_dicomweb_peer(
                &key,
                "source",
                &s.name,
                &s.url,
                s.tls.as_ref(),
                s.auth.as_ref(),
                s.allow_insecure_auth,
            )?;
        }
        if self.export.timeout_s == 0 || self.export.min_rate_kbps == 0 {
            return Err(invalid(
                "export.timeout_s/min_rate_kbps",
                "must be at least 1 (a transfer without a time limit can hold a worker forever)",
            ));
        }
        if self.export.workers == 0 || self.export.batch == 0 || self.export.max_attempts == 0 {
            return Err(invalid(
                "export",
                "workers, batch and max_attempts must be at least 1",
            ));
        }
        if self.jobs.workers == 0 || self.inference.max_batch == 0 {
            return Err(invalid("jobs.workers/inference.max_batch", "must be at least 1"));
        }
        if self.auth.session_hours == 0 {
            return Err(invalid("auth.session_hours", "must be at least 1 hour"));
        }
        if self.auth.failures_per_minute == 0 {
            return Err(invalid("auth.failures_per_minute", "must be at least 1"));
        }
        if self.jobs.lease_s < 5 {
            return Err(invalid("jobs.lease_s", "must be at least 5 seconds"));
        }
        for (key, base_ms, cap_s) in [
            ("jobs", self.jobs.retry_base_ms, self.jobs.retry_cap_s),
            ("export", self.export.retry_base_ms, self.export.retry_cap_s),
        ] {
            if base_ms == 0 || cap_s.saturating_mul(1000) < base_ms {
                return Err(invalid(
                    format!("{key}.retry_base_ms/retry_cap_s"),
                    "the base must be at least 1 ms and the cap at least the base",
                ));
            }
        }
        Ok(())
    }

    pub fn artim_timeout(&self) -> Duration {
        Duration::from_secs(self.node.artim_timeout_s)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.node.idle_timeout_s)
    }
    /// What a received data set may cost (ingest checks).
    pub fn ingest_limits(&self) -> crate::ingest::Limits {
        crate::ingest::Limits {
            max_sequence_depth: self.storage.max_sequence_depth,
            max_pixel_bytes: self.storage.max_pixel_mb.saturating_mul(1 << 20),
            max_inflated_bytes: self.storage.max_instance_mb.saturating_mul(1 << 20),
        }
    }
}

/// The URL, TLS and credential settings of a DICOMweb peer (a destination or a source), under
/// `key` (e.g. `destinations[0]`).
pub(crate) fn check_dicomweb_peer(
    key: &str,
    role: &str,
    name: &str,
    url: &str,
    tls: Option<&TlsConfig>,
    auth: Option<&AuthConfig>,
    allow_insecure_auth: bool,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{key}.{k}");
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(key("url"), format!("{url:?} is not an http(s) URL")));
    }
    let https = url.starts_with("https://");
    if let Some(tls) = tls {
        if tls.cert_file.is_some() || tls.key_file.is_some() || tls.server_name.is_some() {
            return Err(invalid(
                key("tls"),
                format!("{name:?}: cert_file, key_file and server_name apply to dimse destinations (DICOM TLS) only"),
            ));
        }
        if !https {
            return Err(invalid(
                key("tls"),
                format!("{name:?}: TLS settings need an https:// URL, not {url:?}"),
            ));
        }
        if let Some(ca) = &tls.ca_file {
            if !ca.is_file() {
                return Err(invalid(
                    key("tls.ca_file"),
                    format!("{name:?}: {} is not a readable file", ca.display()),
                ));
            }
        }
    }
    if let Some(auth) = auth {
        if auth.bearer.is_some() == auth.basic.is_some() {
            return Err(invalid(
                key("auth"),
                format!("{name:?}: give either bearer or basic"),
            ));
        }
        if auth.basic.as_deref().is_some_and(|b| !b.contains(':')) {
            return Err(invalid(
                key("auth.basic"),
                format!("{name:?}: must be user:password"),
            ));
        }
        // Basic credentials are the password itself, and a bearer token is as good as one:
        // neither crosses a hospital network in clear text unless the site says so for this peer.
        if !https && !allow_insecure_auth {
            return Err(invalid(
                key("auth"),
                format!(
                    "{role} {name:?} sends credentials over plain http:// ({url}); use https:// or set allow_insecure_auth = true on it"
                ),
            ));
        }
    }
    Ok(())
}

/// The `tls` of a dimse destination (under `key`): a CA to trust, a client certificate given
/// whole (certificate and key) or not at all, and a name a certificate can carry.
pub(crate) fn check_dicom_tls(key: &str, name: &str, tls: &TlsConfig) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{key}.{k}");
    let Some(ca) = &tls.ca_file else {
        return Err(invalid(
            key("ca_file"),
            format!("{name:?}: DICOM TLS needs the CA that signed the destination's certificate"),
        ));
    };
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(invalid(
            key("cert_file/key_file"),
            format!("{name:?}: give both the client certificate and its key, or neither"),
        ));
    }
    for (k, path) in [
        ("ca_file", Some(ca)),
        ("cert_file", tls.cert_file.as_ref()),
        ("key_file", tls.key_file.as_ref()),
    ] {
        if let Some(path) = path.filter(|p| !p.is_file()) {
            return Err(invalid(
                key(k),
                format!("{name:?}: {} is not a readable file", path.display()),
            ));
        }
    }
    if let Some(server_name) = &tls.server_name {
        vcnode_scp::tls::check_server_name(server_name)
            .map_err(|e| invalid(key("server_name"), format!("{name:?}: {e}")))?;
    }
    Ok(())
}

/// PS3.5 AE: 1 to 16 characters of the default repertoire, no backslash or control characters,
/// not only spaces.
pub(crate) fn check_ae_title(key: &str, ae: &str) -> Result<(), ConfigError> {
    if ae.trim().is_empty() || ae.len() > 16 {
        return Err(invalid(key, format!("{ae:?} must be 1 to 16 characters")));
    }
    if !ae
        .chars()
        .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\')
    {
        return Err(invalid(
            key,
            format!("{ae:?} may hold only printable ASCII without backslash"),
        ));
    }
    if ae != ae.trim() {
        return Err(invalid(key, format!("{ae:?} has leading or trailing spaces")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_load() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.node.ae_title, "VCNODE");
        assert_eq!(c.node.dimse_port, 11112);
        assert_eq!(c.node.http_port, 8080);
        assert_eq!(c.peers[0].ae_title, "MODALITY");
        assert_eq!(c.inference.device, DeviceRequest::Auto);
        assert_eq!(c.jobs.select, JobSelect::LowEnergy);
        assert_eq!(c.inference.ood, OodAction::Flag);
    }

    #[test]
    fn authentication_is_required_by_default_and_its_limits_are_checked() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert!(
            c.auth.required,
            "no anonymous access to patient images by default"
        );
        assert!(c.auth.open_health);
        assert!(!c.node.http_tls);
        let lab = Config::load_with_env(None, env(&[("VCNODE__AUTH__REQUIRED", "false")])).unwrap();
        assert!(!lab.auth.required);
        let e = Config::load_with_env(None, env(&[("VCNODE__AUTH__FAILURES_PER_MINUTE", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.failures_per_minute"), "{e}");
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("VCNODE__NODE__DIMSE_PORT", "104"),
                ("VCNODE__INFERENCE__DEVICE", "cpu"),
                ("VCNODE__NODE__AE_TITLE", "MYNODE"),
            ]),
        )
        .unwrap();
        assert_eq!(c.node.dimse_port, 104);
        assert_eq!(c.node.ae_title, "MYNODE");
        assert_eq!(c.inference.device, DeviceRequest::Cpu);
    }

    #[test]
    fn file_overrides_defaults_and_bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        std::fs::write(&path, "[node]\nae_title = \"THIS_TITLE_IS_FAR_TOO_LONG\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("node.ae_title"), "{err}");

        std::fs::write(&path, "[inference]\nood = \"warn\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("warn") && err.contains("refuse"), "{err}");

        std::fs::write(&path, "[inference]\ndevice = \"tpu\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tpu") && err.contains("device"), "{err}");

        std::fs::write(&path, "[node]\ndimse_port = \"many\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dimse_port"), "{err}");

        std::fs::write(&path, "[node]\nae_titel = \"X\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ae_titel"), "{err}");

        std::fs::write(
            &path,
            "[node]\ndata_dir = \"/srv/vc\"\n[[peers]]\nae_title = \"CESM1\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(c.node.data_dir, PathBuf::from("/srv/vc"));
        assert_eq!(c.node.ae_title, "VCNODE");
        assert_eq!(c.peers.len(), 1, "a file's peers replace the default list");
        assert_eq!(c.peers[0].host, None);
    }

    #[test]
    fn routes_resolve_by_calling_ae_and_must_name_known_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        let dests = "[[destinations]]\nname = \"pacs\"\nkind = \"dimse\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = 4242\n\
                     [[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"http://127.0.0.1:8042/dicom-web\"\n";
        std::fs::write(&path, format!("{dests}[[routes]]\nfrom_ae = \"MODALITY\"\nto = [\"pacs\", \"web\"]\n[[routes]]\nfrom_ae = \"*\"\nto = [\"web\"]\n")).unwrap();
        let c = Config::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(
            crate::directory::destinations_for(&c.routes, Some("MODALITY")),
            ["pacs", "web"]
        );
        assert_eq!(
            crate::directory::destinations_for(&c.routes, Some("OTHER")),
            ["web"]
        );
        assert_eq!(crate::directory::destinations_for(&c.routes, None), ["web"]);

        std::fs::write(
            &path,
            format!("{dests}[[routes]]\nfrom_ae = \"*\"\nto = [\"archive\"]\n"),
        )
        .unwrap();
        let err = Config::load_with_env(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes[0].to") && err.contains("archive"), "{err}");

        std::fs::write(
            &path,
            "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"ftp://x\"\n",
        )
        .unwrap();
        let err = Config::load_with_env(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("destinations[0].url"), "{err}");
    }

    #[test]
    fn retry_policies_come_from_jobs_and_export_and_a_cap_below_the_base_is_refused() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        let jobs = c.jobs.retry_policy();
        assert_eq!(
            (jobs.base, jobs.cap),
            (Duration::from_secs(5), Duration::from_secs(300))
        );
        assert!(c.jobs.max_attempts >= 10, "transient faults back off for minutes");
        assert_eq!(c.export.retry_policy().cap, Duration::from_secs(600));
        let err = Config::load_with_env(
            None,
            env(&[
                ("VCNODE__JOBS__RETRY_BASE_MS", "90000"),
                ("VCNODE__JOBS__RETRY_CAP_S", "60"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("jobs.retry_base_ms"), "{err}");
    }

    fn load_dests(dir: &Path, dests: &str) -> Result<Config, String> {
        let path = dir.join("v.toml");
        std::fs::write(&path, dests).unwrap();
        Config::load_with_env(Some(&path), env(&[])).map_err(|e| e.to_string())
    }

    #[test]
    fn https_destinations_are_accepted_with_an_optional_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not read here").unwrap();
        let c = load_dests(
            dir.path(),
            &format!(
                "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"https://pacs.example.org/dicom-web\"\n\
                 auth = {{ bearer = \"t0ken\" }}\ntls = {{ ca_file = \"{}\" }}\n",
                ca.display()
            ),
        )
        .unwrap();
        assert_eq!(
            c.destinations[0].tls.as_ref().unwrap().ca_file.as_deref(),
            Some(ca.as_path())
        );

        let err = load_dests(
            dir.path(),
            "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"https://x/dicom-web\"\ntls = { ca_file = \"/no/such/ca.pem\" }\n",
        )
        .unwrap_err();
        assert!(
            err.contains("destinations[0].tls.ca_file") && err.contains("/no/such/ca.pem"),
            "{err}"
        );
        let err = load_dests(
            dir.path(),
            "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"https://x/dicom-web\"\ntls = { verify = \"no\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("verify"), "{err}");
        let err = load_dests(
            dir.path(),
            "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"http://x/dicom-web\"\ntls = {}\n",
        )
        .unwrap_err();
        assert!(
            err.contains("destinations[0].tls") && err.contains("https://"),
            "{err}"
        );
        let err = load_dests(
            dir.path(),
            "[[destinations]]\nname = \"pacs\"\nkind = \"dimse\"\nae_title = \"PACS\"\nhost = \"h\"\nport = 104\ntls = {}\n",
        )
        .unwrap_err();
        assert!(
            err.contains("destinations[0].tls.ca_file") && err.contains("\"pacs\""),
            "{err}"
        );
        let err = load_dests(
            dir.path(),
            &format!(
                "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"https://x/dicom-web\"\ntls = {{ ca_file = \"{}\", server_name = \"x\" }}\n",
                ca.display()
            ),
        )
        .unwrap_err();
        assert!(
            err.contains("destinations[0].tls") && err.contains("dimse destinations"),
            "{err}"
        );
    }

    #[test]
    fn dimse_destinations_take_dicom_tls_with_a_ca_and_an_optional_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = (
            dir.path().join("ca.pem"),
            dir.path().join("client.pem"),
            dir.path().join("client.key"),
        );
        for f in [&ca, &cert, &key] {
            std::fs::write(f, "read when connecting, not here").unwrap();
        }
        let dest = |tls: &str| {
            format!(
                "[[destinations]]\nname = \"pacs\"\nkind = \"dimse\"\nae_title = \"PACS\"\nhost = \"pacs.example\"\nport = 2762\ntls = {{ {tls} }}\n"
            )
        };
        let ca_only = format!("ca_file = \"{}\"", ca.display());
        let c = load_dests(dir.path(), &dest(&ca_only)).unwrap();
        let tls = c.destinations[0].tls.as_ref().unwrap();
        assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));
        assert!(tls.cert_file.is_none() && tls.server_name.is_none());
        let full = format!(
            "{ca_only}, cert_file = \"{}\", key_file = \"{}\", server_name = \"127.0.0.1\"",
            cert.display(),
            key.display()
        );
        let c = load_dests(dir.path(), &dest(&full)).unwrap();
        assert_eq!(
            c.destinations[0].tls.as_ref().unwrap().server_name.as_deref(),
            Some("127.0.0.1")
        );
        let err = load_dests(
            dir.path(),
            &dest(&format!("{ca_only}, cert_file = \"{}\"", cert.display())),
        )
        .unwrap_err();
        assert!(err.contains("destinations[0].tls.cert_file/key_file"), "{err}");
        let err = load_dests(dir.path(), &dest("ca_file = \"/no/such/ca.pem\"")).unwrap_err();
        assert!(
            err.contains("destinations[0].tls.ca_file") && err.contains("/no/such/ca.pem"),
            "{err}"
        );
        let err = load_dests(
            dir.path(),
            &dest(&format!("{ca_only}, server_name = \"not a name\"")),
        )
        .unwrap_err();
        assert!(err.contains("destinations[0].tls.server_name"), "{err}");
    }

    #[test]
    fn https_needs_the_node_certificate_and_sets_the_scheme() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert!(!c.node.http_tls);
        assert_eq!(c.http_scheme(), "http");
        let dir = tempfile::tempdir().unwrap();
        let err = load_dests(dir.path(), "[node]\nhttp_tls = true\n").unwrap_err();
        assert!(
            err.contains("node.http_tls") && err.contains("[node.tls]"),
            "{err}"
        );
        let (cert, key) = (dir.path().join("node.pem"), dir.path().join("node.key"));
        for f in [&cert, &key] {
            std::fs::write(f, "read at start-up, not here").unwrap();
        }
        let c = load_dests(
            dir.path(),
            &format!(
                "[node]\nhttp_tls = true\n[node.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        assert_eq!(c.http_scheme(), "https");
    }

    #[test]
    fn debug_output_of_a_config_holds_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let c = load_dests(
            dir.path(),
            "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"https://x/dicom-web\"\nauth = { bearer = \"t0ken-SECRET-1\" }\n\
             [[destinations]]\nname = \"web2\"\nkind = \"dicomweb\"\nurl = \"https://y/dicom-web\"\nauth = { basic = \"alice:pa55-SECRET-2\" }\n\
             [[sources]]\nname = \"PACS\"\nurl = \"https://z/dicom-web\"\nauth = { bearer = \"src-SECRET-3\" }\n",
        )
        .unwrap();
        for text in [format!("{c:?}"), format!("{c:#?}")] {
            for secret in ["t0ken-SECRET-1", "pa55-SECRET-2", "alice:", "src-SECRET-3"] {
                assert!(!text.contains(secret), "{secret} in Debug output");
            }
            // Which kind of credential is configured stays visible.
            assert!(text.contains("\"***\""), "{text}");
        }
    }

    #[test]
    fn credentials_over_plain_http_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        for auth in ["{ basic = \"user:secret\" }", "{ bearer = \"t0ken\" }"] {
            let dest = format!(
                "[[destinations]]\nname = \"archive\"\nkind = \"dicomweb\"\nurl = \"http://10.0.0.9/dicom-web\"\nauth = {auth}\n"
            );
            let err = load_dests(dir.path(), &dest).unwrap_err();
            assert!(
                err.contains("destinations[0].auth")
                    && err.contains("\"archive\"")
                    && err.contains("allow_insecure_auth"),
                "{err}"
            );
            assert!(
                !err.contains("secret") && !err.contains("t0ken"),
                "no credential in the error: {err}"
            );
            let c = load_dests(dir.path(), &format!("{dest}allow_insecure_auth = true\n")).unwrap();
            assert!(c.destinations[0].allow_insecure_auth);
        }
        // Without credentials, plain http stays fine (tests/deliver.rs sends to Orthanc so).
        load_dests(
            dir.path(),
            "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"http://127.0.0.1:8042/dicom-web\"\n",
        )
        .unwrap();
        let err = load_dests(
            dir.path(),
            "[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"https://x/dicom-web\"\nauth = { basic = \"no-colon\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("auth.basic") && !err.contains("no-colon"), "{err}");
    }

    #[test]
    fn sources_are_checked_like_dicomweb_destinations_and_named_as_ae_titles() {
        let dir = tempfile::tempdir().unwrap();
        let source = |name: &str, url: &str, more: &str| {
            format!("[[sources]]\nname = \"{name}\"\nurl = \"{url}\"\n{more}")
        };
        let c = load_dests(
            dir.path(),
            &source(
                "PACS",
                "https://pacs.example.org/dicom-web",
                "auth = { bearer = \"t0ken\" }\n",
            ),
        )
        .unwrap();
        assert_eq!(c.sources[0].name, "PACS");
        let err = load_dests(
            dir.path(),
            &format!(
                "{}{}",
                source("PACS", "http://a/dicom-web", ""),
                source("PACS", "http://b/dicom-web", "")
            ),
        )
        .unwrap_err();
        assert!(
            err.contains("sources[1].name") && err.contains("used twice"),
            "{err}"
        );
        let err = load_dests(dir.path(), &source("PACS", "ftp://a", "")).unwrap_err();
        assert!(err.contains("sources[0].url"), "{err}");
        let err = load_dests(
            dir.path(),
            &source("A_NAME_LONGER_THAN_AN_AE_TITLE", "http://a/dicom-web", ""),
        )
        .unwrap_err();
        assert!(err.contains("sources[0].name"), "{err}");
        let insecure = source(
            "PACS",
            "http://10.0.0.9/dicom-web",
            "auth = { basic = \"u:secret\" }\n",
        );
        let err = load_dests(dir.path(), &insecure).unwrap_err();
        assert!(
            err.contains("sources[0].auth")
                && err.contains("source \"PACS\"")
                && err.contains("allow_insecure_auth")
                && !err.contains("secret"),
            "{err}"
        );
        load_dests(dir.path(), &format!("{insecure}allow_insecure_auth = true\n")).unwrap();
        let err = load_dests(
            dir.path(),
            &source(
                "PACS",
                "http://a/dicom-web",
                "tls = { ca_file = \"/no/such/ca.pem\" }\n",
            ),
        )
        .unwrap_err();
        assert!(
            err.contains("sources[0].tls") && err.contains("https://"),
            "{err}"
        );
    }

    #[test]
    fn export_time_limits_must_be_set() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.export.min_bytes_per_s(), 125_000);
        assert_eq!(c.export.timeout(), Duration::from_secs(30));
        for (k, v) in [
            ("VCNODE__EXPORT__MIN_RATE_KBPS", "0"),
            ("VCNODE__EXPORT__TIMEOUT_S", "0"),
        ] {
            let err = Config::load_with_env(None, env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("export.timeout_s/min_rate_kbps"), "{err}");
        }
    }

    #[test]
    fn dicom_tls_is_off_by_default_and_needs_the_node_certificate() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.node.dimse_tls_port, None, "DICOM TLS is off unless configured");
        assert!(c.node.tls.is_none());

        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = (
            dir.path().join("node.pem"),
            dir.path().join("node.key"),
            dir.path().join("ca.pem"),
        );
        for f in [&cert, &key, &ca] {
            std::fs::write(f, "read at start-up, not here").unwrap();
        }
        let tls = format!(
            "[node.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        );
        let c = load_dests(
            dir.path(),
            &format!(
                "[node]\ndimse_tls_port = 2762\n{tls}client_ca_file = \"{}\"\n",
                ca.display()
            ),
        )
        .unwrap();
        assert_eq!(c.node.dimse_tls_port, Some(2762));
        let files = c.node.tls.unwrap().files();
        assert_eq!(files.client_ca_file.as_deref(), Some(ca.as_path()));

        let err = load_dests(dir.path(), "[node]\ndimse_tls_port = 0\n").unwrap_err();
        assert!(
            err.contains("node.dimse_tls_port") && err.contains("[node.tls]"),
            "{err}"
        );
        let err = load_dests(
            dir.path(),
            &format!("[node]\ndimse_port = 2762\ndimse_tls_port = 2762\n{tls}"),
        )
        .unwrap_err();
        assert!(err.contains("node.dimse_tls_port"), "{err}");
        let err = load_dests(
            dir.path(),
            &format!("[node]\ndimse_tls_port = 0\n{tls}client_ca_file = \"/no/such/ca.pem\"\n"),
        )
        .unwrap_err();
        assert!(
            err.contains("node.tls.client_ca_file") && err.contains("/no/such/ca.pem"),
            "{err}"
        );
    }
}
