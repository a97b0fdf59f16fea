//! The directory: who may send (peers), where results can go (destinations) and whose results
//! go where (routes), kept in the node's database and applied live.
//!
//! The configuration file's `[[peers]]`, `[[destinations]]` and `[[routes]]` seed it; the admin
//! API (`/api/peers`, `/api/destinations`, `/api/routes`, [`crate::web`]) and the CLI (`vcnode
//! peers|destinations|routes list|add|remove`) change it. Every change is checked by the one
//! [`validate`] the file goes through, written in one transaction that also bumps a version
//! number, and published at once to the running node ([`Live`]): the storage SCP's peer check
//! reads the live [`vcnode_scp::PeerList`], the pipeline's routes and the exporter's
//! destinations read the live [`Entries`]. A change made by the CLI (another process) is seen
//! by the node's watch task, which polls the version every half second.
//!
//! # Which wins: the file or the database
//!
//! Each entry has a key (a peer's `ae_title`, a destination's `name`, a route's `from_ae`) and
//! an origin:
//! - `config`: it came from the file and was never changed through the API or CLI. Such an
//!   entry follows the file: at each start, a changed definition in the file replaces it, and an
//!   entry no longer in the file is removed. Keys the database has never seen are added.
//! - `api`: it was created, changed or deleted through the API or CLI. From then on the
//!   database wins: the file's version of that key is ignored (a deletion is kept as a
//!   tombstone, so a deleted peer does not come back from the file), and when the file says
//!   something else for the key, start-up logs one warning naming the key.
//!
//! So an operator who only edits the file keeps today's behaviour (edit, restart), and what
//! an admin did through the API is never undone by a restart.

mod validate;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Row, SqlitePool};
use tracing::{info, warn};
use vcnode_scp::{Peer, PeerList};

use crate::config::{AuthConfig, Config, ConfigError, DestinationConfig, PeerConfig, RouteConfig};
use crate::supervisor::{Stage, Supervisor};
pub use validate::{validate, KeyStyle};

/// How often the node looks for changes made by another process (the CLI).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The change would make the directory invalid (what the file would be refused for).
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotFound(String),
    /// A destination that routes still name.
    #[error("{0}")]
    InUse(String),
    #[error("directory database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("directory: the stored {section} entry {key:?} cannot be read: {reason}")]
    Unreadable {
        section: &'static str,
        key: String,
        reason: String,
    },
}

impl From<ConfigError> for DirectoryError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid { key, reason } => DirectoryError::Invalid { key, reason },
            other => DirectoryError::Invalid {
                key: "configuration".into(),
                reason: other.to_string(),
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, DirectoryError>;

/// Who defined an entry last (see the module documentation for what it decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Config,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }

    fn parse(s: &str) -> Origin {
        if s == "config" {
            Origin::Config
        } else {
            Origin::Api
        }
    }
}

/// One peer, destination or route with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    pub def: T,
    pub origin: Origin,
}

/// The whole directory at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entries {
    pub peers: Vec<Entry<PeerConfig>>,
    pub destinations: Vec<Entry<DestinationConfig>>,
    pub routes: Vec<Entry<RouteConfig>>,
}

impl Entries {
    /// The file's entries, as a node without a database (offline tools) sees them.
    pub fn from_config(config: &Config) -> Entries {
        fn from<T: Clone>(defs: &[T]) -> Vec<Entry<T>> {
            defs.iter()
                .map(|d| Entry {
                    def: d.clone(),
                    origin: Origin::Config,
                })
                .collect()
        }
        Entries {
            peers: from(&config.peers),
            destinations: from(&config.destinations),
            routes: from(&config.routes),
        }
    }

    pub fn destination(&self, name: &str) -> Option<&DestinationConfig> {
        self.destinations.iter().map(|e| &e.def).find(|d| d.name == name)
    }

    pub fn destination_defs(&self) -> Vec<DestinationConfig> {
        self.destinations.iter().map(|e| e.def.clone()).collect()
    }

    /// The destinations for results of images sent by `calling_ae` ([`destinations_for`]).
    pub fn destinations_for(&self, calling_ae: Option<&str>) -> Vec<String> {
        let routes: Vec<RouteConfig> = self.routes.iter().map(|e| e.def.clone()).collect();
        destinations_for(&routes, calling_ae)
    }

    /// The peers the SCP lets associate: the enabled ones.
    fn scp_peers(&self) -> Vec<Peer> {
        self.peers
            .iter()
            .filter(|e| e.def.enabled)
            .map(|e| Peer {
                ae_title: e.def.ae_title.clone(),
                host: e.def.host,
            })
            .collect()
    }

    fn validate(&self) -> std::result::Result<(), ConfigError> {
        fn defs<T: Clone>(v: &[Entry<T>]) -> Vec<T> {
            v.iter().map(|e| e.def.clone()).collect()
        }
        validate(
            &defs(&self.peers),
            &defs(&self.destinations),
            &defs(&self.routes),
            KeyStyle::Name,
        )
    }
}

/// The destinations for results of images sent by `calling_ae`: those of its route and of the
/// `"*"` route, in route order, each once.
pub fn destinations_for(routes: &[RouteConfig], calling_ae: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in routes {
        if r.from_ae == "*" || Some(r.from_ae.as_str()) == calling_ae {
            for d in &r.to {
                if !out.contains(d) {
                    out.push(d.clone());
                }
            }
        }
    }
    out
}

/// The directory as the running node reads it: cheap to clone, each read sees the latest
/// published [`Entries`].
#[derive(Clone)]
pub struct Live {
    entries: Arc<ArcSwap<Entries>>,
    peers: PeerList,
}

impl Live {
    pub fn new(entries: Entries) -> Live {
        let peers = vcnode_scp::peer_list(entries.scp_peers());
        Live {
            entries: Arc::new(ArcSwap::from_pointee(entries)),
            peers,
        }
    }

    pub fn from_config(config: &Config) -> Live {
        Live::new(Entries::from_config(config))
    }

    /// The directory now.
    pub fn snapshot(&self) -> Arc<Entries> {
        self.entries.load_full()
    }

    /// The list the SCP's peer check reads (enabled peers only).
    pub fn scp_peers(&self) -> PeerList {
        self.peers.clone()
    }

    pub fn destination(&self, name: &str) -> Option<DestinationConfig> {
        self.entries.load().destination(name).cloned()
    }

    pub fn destinations_for(&self, calling_ae: Option<&str>) -> Vec<String> {
        self.entries.load().destinations_for(calling_ae)
    }

    fn publish(&self, entries: Entries) {
        self.peers.store(Arc::new(entries.scp_peers()));
        self.entries.store(Arc::new(entries));
    }
}

/// A kind of entry: peers, destinations or routes.
pub trait Section: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The section's name in the file and the database (`peers`).
    const NAME: &'static str;
    /// One entry, as messages name it (`peer`).
    const ONE: &'static str;
    fn key(&self) -> &str;
    fn of(entries: &Entries) -> &Vec<Entry<Self>>;
    fn of_mut(entries: &mut Entries) -> &mut Vec<Entry<Self>>;
    /// The entry as it may be shown (secrets hidden).
    fn public(&self) -> Self {
        self.clone()
    }
    /// A replacement that shows a secret as [`AuthConfig::HIDDEN`] keeps `old`'s secret, so
    /// what a GET returned can be sent back with one field changed.
    fn keep_hidden_secrets(&mut self, _old: &Self) {}
    /// What still names this entry (and keeps it from being deleted).
    fn used_by(_entries: &Entries, _key: &str) -> Vec<String> {
        Vec::new()
    }
}

impl Section for PeerConfig {
    const NAME: &'static str = "peers";
    const ONE: &'static str = "peer";
    fn key(&self) -> &str {
        &self.ae_title
    }
    fn of(e: &Entries) -> &Vec<Entry<Self>> {
        &e.peers
    }
    fn of_mut(e: &mut Entries) -> &mut Vec<Entry<Self>> {
        &mut e.peers
    }
}

impl Section for DestinationConfig {
    const NAME: &'static str = "destinations";
    const ONE: &'static str = "destination";
    fn key(&self) -> &str {
        &self.name
    }
    fn of(e: &Entries) -> &Vec<Entry<Self>> {
        &e.destinations
    }
    fn of_mut(e: &mut Entries) -> &mut Vec<Entry<Self>> {
        &mut e.destinations
    }
    fn public(&self) -> Self {
        DestinationConfig {
            auth: self.auth.as_ref().map(AuthConfig::hidden),
            ..self.clone()
        }
    }
    fn keep_hidden_secrets(&mut self, old: &Self) {
        let (Some(new), Some(old)) = (self.auth.as_mut(), old.auth.as_ref()) else {
            return;
        };
        for (secret, kept) in [(&mut new.bearer, &old.bearer), (&mut new.basic, &old.basic)] {
            if secret.as_deref() == Some(AuthConfig::HIDDEN) && kept.is_some() {
                secret.clone_from(kept);
            }
        }
    }
    fn used_by(entries: &Entries, key: &str) -> Vec<String> {
        entries
            .routes
            .iter()
            .filter(|r| r.def.to.iter().any(|t| t == key))
            .map(|r| r.def.from_ae.clone())
            .collect()
    }
}

impl Section for RouteConfig {
    const NAME: &'static str = "routes";
    const ONE: &'static str = "route";
    fn key(&self) -> &str {
        &self.from_ae
    }
    fn of(e: &Entries) -> &Vec<Entry<Self>> {
        &e.routes
    }
    fn of_mut(e: &mut Entries) -> &mut Vec<Entry<Self>> {
        &mut e.routes
    }
}

/// A stored row: its definition (None: deleted through the API or CLI) and origin.
type Rows = HashMap<(String, String), (Option<String>, Origin)>;

/// The directory in the node's database, with what the running node reads.
pub struct Directory {
    pool: SqlitePool,
    live: Live,
    /// The version last published (the watch task publishes only newer ones).
    published: Mutex<i64>,
    seen: AtomicI64,
}

impl Directory {
    /// Opens the directory in the node's database (migrated by [`crate::queue::Queue::open`])
    /// and seeds it from the configuration file by the rule in the module documentation.
    /// Fails when the result is invalid (e.g. a route the API added names a destination since
    /// removed from the file), naming the entry.
    pub async fn open_seeded(pool: SqlitePool, config: &Config) -> Result<Directory> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = load_rows(&mut tx).await?;
        let mut changed = 0;
        changed += seed::<PeerConfig>(&mut tx, &rows, &config.peers).await?;
        changed += seed::<DestinationConfig>(&mut tx, &rows, &config.destinations).await?;
        changed += seed::<RouteConfig>(&mut tx, &rows, &config.routes).await?;
        if changed > 0 {
            bump_version(&mut tx).await?;
        }
        let (entries, version) = load(&mut tx).await?;
        entries.validate().map_err(|e| {
            let e = DirectoryError::from(e);
            match e {
                DirectoryError::Invalid { key, reason } => DirectoryError::Invalid {
                    key,
                    reason: format!(
                        "{reason} (in the directory: the configuration file's entries with the changes made through the admin API or CLI)"
                    ),
                },
                e => e,
            }
        })?;
        tx.commit().await?;
        Ok(Directory::with(pool, entries, version))
    }

    /// Opens the directory as stored, without seeding (the CLI beside a running node).
    pub async fn open(pool: SqlitePool) -> Result<Directory> {
        let mut tx = pool.begin().await?;
        let (entries, version) = load(&mut tx).await?;
        tx.commit().await?;
        Ok(Directory::with(pool, entries, version))
    }

    fn with(pool: SqlitePool, entries: Entries, version: i64) -> Directory {
        Directory {
            pool,
            live: Live::new(entries),
            published: Mutex::new(version),
            seen: AtomicI64::new(version),
        }
    }

    pub fn live(&self) -> &Live {
        &self.live
    }

    pub fn snapshot(&self) -> Arc<Entries> {
        self.live.snapshot()
    }

    /// Adds an entry (origin `api`); [`DirectoryError::Exists`] if its key is taken.
    pub async fn create<T: Section>(&self, def: T) -> Result<Entry<T>> {
        let key = def.key().to_string();
        self.change::<T>(&key, |entries| {
            let list = T::of_mut(entries);
            if list.iter().any(|e| e.def.key() == key) {
                return Err(DirectoryError::Exists(format!("{} {key:?} exists", T::ONE)));
            }
            list.push(Entry {
                def: def.clone(),
                origin: Origin::Api,
            });
            Ok(Some(def.clone()))
        })
        .await?;
        info!(section = T::NAME, key = %key, "directory: added");
        Ok(Entry {
            def,
            origin: Origin::Api,
        })
    }

    /// Replaces the entry `key` with `def` (the whole entry; its key cannot change).
    pub async fn replace<T: Section>(&self, key: &str, mut def: T) -> Result<Entry<T>> {
        if def.key() != key {
            return Err(DirectoryError::Invalid {
                key: format!("{}[{key:?}]", T::NAME),
                reason: format!(
                    "the body names {:?}; an entry's key cannot change (delete it and create the other)",
                    def.key()
                ),
            });
        }
        let stored = self
            .change::<T>(key, |entries| {
                let Some(entry) = T::of_mut(entries).iter_mut().find(|e| e.def.key() == key) else {
                    return Err(not_found::<T>(key));
                };
                def.keep_hidden_secrets(&entry.def);
                *entry = Entry {
                    def: def.clone(),
                    origin: Origin::Api,
                };
                Ok(Some(def.clone()))
            })
            .await?;
        info!(section = T::NAME, %key, "directory: changed");
        Ok(Entry {
            def: stored.expect("a replacement is stored"),
            origin: Origin::Api,
        })
    }

    /// Deletes the entry `key`; it stays deleted when the file still lists it.
    pub async fn remove<T: Section>(&self, key: &str) -> Result<()> {
        self.change::<T>(key, |entries| {
            if !T::of(entries).iter().any(|e| e.def.key() == key) {
                return Err(not_found::<T>(key));
            }
            let users = T::used_by(entries, key);
            if !users.is_empty() {
                return Err(DirectoryError::InUse(format!(
                    "{} {key:?} is used by the routes from {}; change or delete them first",
                    T::ONE,
                    users
                        .iter()
                        .map(|u| format!("{u:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            T::of_mut(entries).retain(|e| e.def.key() != key);
            Ok(None)
        })
        .await?;
        info!(section = T::NAME, %key, "directory: deleted");
        Ok(())
    }

    /// Applies `edit` to the stored directory in one write transaction: the edit, the check
    /// of the whole result, the row (`Some`: stored, `None`: a tombstone) and the version.
    async fn change<T: Section>(
        &self,
        key: &str,
        edit: impl FnOnce(&mut Entries) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (mut entries, _) = load(&mut tx).await?;
        let stored = edit(&mut entries)?;
        entries.validate()?;
        let now = crate::queue::now_ms();
        match &stored {
            Some(def) => {
                sqlx::query(
                    "INSERT INTO directory (section, key, definition, origin, position, updated_at)
                     VALUES (?1, ?2, ?3, 'api', (SELECT COALESCE(MAX(position), 0) + 1 FROM directory), ?4)
                     ON CONFLICT (section, key) DO UPDATE
                     SET definition = excluded.definition, origin = 'api', updated_at = excluded.updated_at",
                )
                .bind(T::NAME)
                .bind(key)
                .bind(to_json(def))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "UPDATE directory SET definition = NULL, origin = 'api', updated_at = ?3
                     WHERE section = ?1 AND key = ?2",
                )
                .bind(T::NAME)
                .bind(key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        self.publish(entries, version);
        Ok(stored)
    }

    /// Publishes `entries` unless a newer version is already out.
    fn publish(&self, entries: Entries, version: i64) {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if version > *published {
            self.live.publish(entries);
            *published = version;
        }
        self.seen.fetch_max(version, Ordering::AcqRel);
    }

    /// Reloads and publishes the directory when another process (the CLI) changed it.
    pub async fn reload_if_changed(&self) -> Result<bool> {
        let version: i64 = sqlx::query_scalar("SELECT version FROM directory_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        if version <= self.seen.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        let (entries, version) = load(&mut tx).await?;
        tx.commit().await?;
        info!(
            version,
            peers = entries.peers.len(),
            destinations = entries.destinations.len(),
            routes = entries.routes.len(),
            "directory changed by another process: applied"
        );
        self.publish(entries, version);
        Ok(true)
    }

    /// Starts the task that applies changes made by other processes within
    /// [`WATCH_INTERVAL`].
    pub fn watch(self: &Arc<Self>, supervisor: &mut Supervisor) {
        let directory = self.clone();
        supervisor.spawn("directory watch", Stage::Work, move |stop| {
            let directory = directory.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                    }
                    if let Err(e) = directory.reload_if_changed().await {
                        warn!(error = %e, "cannot read the directory's changes");
                    }
                }
            }
        });
    }
}

fn not_found<T: Section>(key: &str) -> DirectoryError {
    DirectoryError::NotFound(format!("no {} {key:?}", T::ONE))
}

fn to_json<T: Serialize>(def: &T) -> String {
    serde_json::to_string(def).expect("directory entries serialize")
}

async fn bump_version(tx: &mut sqlx::SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "UPDATE directory_version SET version = version + 1 WHERE id = 1 RETURNING version",
    )
    .fetch_one(tx)
    .await?)
}

async fn load_rows(tx: &mut sqlx::SqliteConnection) -> Result<Rows> {
    let rows = sqlx::query("SELECT section, key, definition, origin FROM directory")
        .fetch_all(tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                (r.get("section"), r.get("key")),
                (r.get("definition"), Origin::parse(r.get("origin"))),
            )
        })
        .collect())
}

/// The stored directory and its version.
async fn load(tx: &mut sqlx::SqliteConnection) -> Result<(Entries, i64)> {
    let version: i64 = sqlx::query_scalar("SELECT version FROM directory_version WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT section, key, definition, origin FROM directory
         WHERE definition IS NOT NULL ORDER BY position, key",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut entries = Entries::default();
    for r in rows {
        let section: String = r.get("section");
        let key: String = r.get("key");
        let definition: String = r.get("definition");
        let origin = Origin::parse(r.get("origin"));
        match section.as_str() {
            "peers" => push::<PeerConfig>(&mut entries, &key, &definition, origin)?,
            "destinations" => push::<DestinationConfig>(&mut entries, &key, &definition, origin)?,
            _ => push::<RouteConfig>(&mut entries, &key, &definition, origin)?,
        }
    }
    Ok((entries, version))
}

fn push<T: Section>(entries: &mut Entries, key: &str, definition: &str, origin: Origin) -> Result<()> {
    let def: T = parse(key, definition)?;
    T::of_mut(entries).push(Entry { def, origin });
    Ok(())
}

fn parse<T: Section>(key: &str, definition: &str) -> Result<T> {
    serde_json::from_str(definition).map_err(|e| DirectoryError::Unreadable {
        section: T::NAME,
        key: key.to_string(),
        // serde_json's message names the field and position, not the value.
        reason: e.to_string(),
    })
}

/// Seeds one section from the file (the rule in the module documentation); returns how many
/// rows changed.
async fn seed<T: Section>(tx: &mut sqlx::SqliteConnection, rows: &Rows, file: &[T]) -> Result<usize> {
    let now = crate::queue::now_ms();
    let mut changed = 0;
    let in_file: HashSet<&str> = file.iter().map(|d| d.key()).collect();
    for def in file {
        let key = def.key();
        let stored = rows.get(&(T::NAME.to_string(), key.to_string()));
        let write = match stored {
            None => {
                info!(section = T::NAME, %key, "directory: added from the configuration file");
                true
            }
            Some((Some(json), Origin::Config)) => {
                let differs = parse::<T>(key, json).map_or(true, |stored| stored != *def);
                if differs {
                    info!(section = T::NAME, %key, "directory: changed in the configuration file");
                }
                differs
            }
            Some((json, _)) => {
                let same = json
                    .as_deref()
                    .is_some_and(|json| parse::<T>(key, json).is_ok_and(|stored| stored == *def));
                if !same {
                    warn!(
                        section = T::NAME,
                        %key,
                        "the configuration file's entry differs from the database's, which was {} through the admin API or CLI: the database's is used",
                        if json.is_some() { "changed" } else { "deleted" }
                    );
                }
                false
            }
        };
        if write {
            sqlx::query(
                "INSERT INTO directory (section, key, definition, origin, position, updated_at)
                 VALUES (?1, ?2, ?3, 'config', (SELECT COALESCE(MAX(position), 0) + 1 FROM directory), ?4)
                 ON CONFLICT (section, key) DO UPDATE
                 SET definition = excluded.definition, updated_at = excluded.updated_at",
            )
            .bind(T::NAME)
            .bind(key)
            .bind(to_json(def))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            changed += 1;
        }
    }
    for ((section, key), (_, origin)) in rows {
        if section == T::NAME && *origin == Origin::Config && !in_file.contains(key.as_str()) {
            info!(section = T::NAME, %key, "directory: removed from the configuration file");
            sqlx::query("DELETE FROM directory WHERE section = ?1 AND key = ?2")
                .bind(T::NAME)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests;
