//! Who may use the HTTP side, and what they did with it (issue 15, security).
//!
//! - **Principals**: API tokens (`vcnode tokens create --name N --role R`, sent as
//!   `Authorization: Bearer …`), local users (`vcnode users add`) who sign in on `GET /login`,
//!   and the sessions a sign-in opens (cookie `vcnode_session`). All live in the node's
//!   database and are looked up on each request, so the CLI's changes apply at once to a
//!   running node. No secret is stored as it is: tokens and session ids as SHA-256, passwords
//!   as argon2id.
//! - **Roles**: reader (GET/HEAD on `/dicomweb`), uploader (POST on `/dicomweb`), admin
//!   (everything, all of `/api`). [`guard`] wraps every route of [`super::router`], so a route
//!   added later under `/api` or `/dicomweb` is covered without doing anything: no principal →
//!   401, wrong role → 403. HTML pages (the viewer, `/status`) send an anonymous browser to the
//!   login page instead. Failed attempts are counted per client address; past
//!   `[auth] failures_per_minute` the address gets 429 until the minute has passed.
//! - **Audit**: every admin change (non-GET on `/api`) and every DICOMweb query, retrieval and
//!   store is a row in `audit_log` and an info line on target `vcnode::audit`: who, route
//!   template, the path's key or the Study Instance UID, status. Never a patient's name or ID.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{WebError, WebState};
use crate::config::HttpAuthConfig;
use crate::queue::now_ms;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "vcnode_session";
/// What a failure counts against: a sliding minute.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Roles, principals, secrets
// ---------------------------------------------------------------------------------------------

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// Everything, including all of `/api`.
    Admin,
    /// GET and HEAD on `/dicomweb` (query and retrieve), the viewer.
    Reader,
    /// POST on `/dicomweb` (STOW-RS).
    Uploader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
            Role::Uploader => "uploader",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "reader" => Ok(Role::Reader),
            "uploader" => Ok(Role::Uploader),
            other => Err(format!("unknown role {other:?} (admin, reader, uploader)")),
        }
    }
}

/// Who made a request: a token's or a user's name and its role. The auth middleware puts it
/// into every request's extensions that it lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// Requests without credentials when `[auth] required = false` (a lab).
    fn anonymous() -> Principal {
        Principal {
            name: "anonymous".to_string(),
            role: Role::Admin,
        }
    }
}

/// A token, password or session id: its text never shows in `Debug` or `Display` output, so
/// it cannot reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }
    /// The text itself: for the one place that must show or send it (the CLI printing a new
    /// token once, a cookie being set).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// 256 bits from the OS's CSPRNG, as hex.
fn random_hex() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// How tokens and session ids are stored. A plain SHA-256 is enough for them (unlike
/// passwords): they are 256-bit random values, so there is no dictionary to guess from and a
/// slow hash would only slow down every request, which looks the hash up.
fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

/// A token as `vcnode tokens list` shows it (never the token itself).
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

/// One audited request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub role: String,
    /// query, retrieve, store or admin
    pub action: String,
    pub method: String,
    pub route: String,
    pub resource: Option<String>,
    pub study_uid: Option<String>,
    pub status: u16,
    pub client: Option<String>,
}

/// Filters of `GET /api/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub actor: Option<String>,
    pub limit: i64,
}

/// Tokens, users, sessions and the audit log in the node's database.
#[derive(Clone)]
pub struct AuthStore {
    pool: SqlitePool,
}

fn role_of(text: &str) -> Result<Role, AuthError> {
    text.parse().map_err(AuthError::Invalid)
}

/// The principal of a `(name, role)` row of the tokens or the sessions table.
fn principal_of(row: Option<sqlx::sqlite::SqliteRow>) -> Result<Option<Principal>, AuthError> {
    row.map(|r| {
        Ok(Principal {
            name: r.get(0),
            role: role_of(r.get(1))?,
        })
    })
    .transpose()
}

fn check_name(what: &str, name: &str) -> Result<(), AuthError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err(AuthError::Invalid(format!(
            "a {what} name is 1 to 64 characters: letters, digits, '.', '_', '-', '@'"
        )));
    }
    Ok(())
}

/// The shortest password `vcnode users add` takes.
pub const MIN_PASSWORD_LEN: usize = 8;

impl AuthStore {
    pub fn new(pool: SqlitePool) -> AuthStore {
        AuthStore { pool }
    }

    /// A new token; the only time its text exists outside the caller is the return value.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        expires_at: Option<i64>,
    ) -> Result<Secret, AuthError> {
        check_name("token", name)?;
        let token = Secret::new(format!("vcnode_{}", random_hex()?));
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (name, role, token_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(secret_hash(token.expose()))
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(AuthError::Invalid(format!(
                "a token named {name:?} exists already (revoked tokens keep their name)"
            )));
        }
        Ok(token)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let rows =
            sqlx::query("SELECT name, role, created_at, expires_at, revoked_at FROM api_tokens ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    name: r.get(0),
                    role: role_of(r.get(1))?,
                    created_at: r.get(2),
                    expires_at: r.get(3),
                    revoked_at: r.get(4),
                })
            })
            .collect()
    }

    /// Revokes a token and ends the sessions opened with it; false if no live token has the name.
    pub async fn revoke_token(&self, name: &str) -> Result<bool, AuthError> {
        let mut tx = self.pool.begin().await?;
        let revoked =
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(name)
                .execute(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM sessions WHERE kind = 'token' AND name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked.rows_affected() == 1)
    }

    /// The principal of a live (not revoked, not expired) token.
    pub async fn token_principal(&self, token: &str) -> Result<Option<Principal>, AuthError> {
        let row = sqlx::query(
            "SELECT name, role FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(secret_hash(token))
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        principal_of(row)
    }

    pub async fn add_user(&self, name: &str, role: Role, password: &Secret) -> Result<(), AuthError> {
        check_name("user", name)?;
        if password.expose().chars().count() < MIN_PASSWORD_LEN {
            return Err(AuthError::Invalid(format!(
                "the password must have at least {MIN_PASSWORD_LEN} characters"
            )));
        }
        let password = password.clone();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))??;
        let inserted = sqlx::query(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(AuthError::Invalid(format!(
                "a user named {name:?} exists already"
            )));
        }
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>, AuthError> {
        let rows = sqlx::query("SELECT name, role, created_at FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UserInfo {
                    name: r.get(0),
                    role: role_of(r.get(1))?,
                    created_at: r.get(2),
                })
            })
            .collect()
    }

    /// Removes a user and ends their sessions; false if there is no such user.
    pub async fn remove_user(&self, name: &str) -> Result<bool, AuthError> {
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE kind = 'user' AND name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(removed.rows_affected() == 1)
    }

    /// The user's principal if the password is theirs. Takes as long for an unknown user as for
    /// a wrong password, so the answer time does not tell which names exist.
    pub async fn verify_user(&self, name: &str, password: &Secret) -> Result<Option<Principal>, AuthError> {
        let row = sqlx::query("SELECT role, password_hash FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let (role, hash) = match &row {
            Some(r) => (Some(role_of(r.get(0))?), r.get::<String, _>(1)),
            None => (None, dummy_hash().to_string()),
        };
        let password = password.clone();
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        Ok(match (role, matches) {
            (Some(role), true) => Some(Principal {
                name: name.to_string(),
                role,
            }),
            _ => None,
        })
    }

    /// A new session for `principal` (`kind`: "user" or "token"); its id, for the cookie.
    async fn open_session(
        &self,
        kind: &str,
        principal: &Principal,
        lifetime: Duration,
    ) -> Result<Secret, AuthError> {
        let id = Secret::new(random_hex()?);
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Sessions past their end are of no use to anyone: cleared on each sign-in.
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, kind, name, role, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(secret_hash(id.expose()))
        .bind(kind)
        .bind(&principal.name)
        .bind(principal.role.as_str())
        .bind(now)
        .bind(now.saturating_add(lifetime.as_millis() as i64))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn session_principal(&self, id: &str) -> Result<Option<Principal>, AuthError> {
        let row = sqlx::query("SELECT name, role FROM sessions WHERE id_hash = ? AND expires_at > ?")
            .bind(secret_hash(id))
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        principal_of(row)
    }

    async fn close_session(&self, id: &str) -> Result<(), AuthError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(secret_hash(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends audit entries, in one transaction (one fsync for the lot).
    pub async fn record_audit(&self, entries: &[AuditEntry]) -> Result<(), AuthError> {
        let mut tx = self.pool.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, role, action, method, route, resource, \
                 study_uid, status, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.role)
            .bind(&e.action)
            .bind(&e.method)
            .bind(&e.route)
            .bind(&e.resource)
            .bind(&e.study_uid)
            .bind(e.status as i64)
            .bind(&e.client)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Audit rows, newest first.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, AuthError> {
        let rows = sqlx::query(
            "SELECT at, actor, role, action, method, route, resource, study_uid, status, client \
             FROM audit_log WHERE (? IS NULL OR at >= ?) AND (? IS NULL OR at < ?) \
             AND (? IS NULL OR actor = ?) ORDER BY id DESC LIMIT ?",
        )
        .bind(f.since)
        .bind(f.since)
        .bind(f.until)
        .bind(f.until)
        .bind(&f.actor)
        .bind(&f.actor)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: r.get(0),
                actor: r.get(1),
                role: r.get(2),
                action: r.get(3),
                method: r.get(4),
                route: r.get(5),
                resource: r.get(6),
                study_uid: r.get(7),
                status: r.get::<i64, _>(8) as u16,
                client: r.get(9),
            })
            .collect())
    }
}

/// argon2id with the crate's defaults (OWASP's minimum: 19 MiB, 2 passes) and a random salt.
fn hash_password(password: &Secret) -> Result<String, AuthError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| AuthError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn verify_password(password: &Secret, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash no password matches, verified for unknown users (same work as for a known one).
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(&Secret::new(random_hex().unwrap_or_else(|_| "x".repeat(64)))).unwrap_or_default()
    })
}

// ---------------------------------------------------------------------------------------------
// Failed attempts
// ---------------------------------------------------------------------------------------------

/// Failed sign-ins and bad tokens per client address in the last minute.
pub struct FailureLimiter {
    limit: usize,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl FailureLimiter {
    pub fn new(limit: u32) -> FailureLimiter {
        FailureLimiter {
            limit: limit as usize,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// None while `client` may try; else how long until it may again.
    pub fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let list = all.get_mut(&client)?;
        while list
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            list.pop_front();
        }
        if list.is_empty() {
            all.remove(&client);
            return None;
        }
        (list.len() >= self.limit).then(|| FAILURE_WINDOW.saturating_sub(now.duration_since(list[0])))
    }

    pub fn fail(&self, client: IpAddr) {
        let now = Instant::now();
        let mut all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Addresses whose failures have all aged out are dropped, so the map stays small.
        all.retain(|_, list| {
            list.back()
                .is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW)
        });
        let list = all.entry(client).or_default();
        list.push_back(now);
        // More than the limit need not be remembered: the oldest decides when it ends.
        while list.len() > self.limit.max(1) {
            list.pop_front();
        }
    }
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut response = WebError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed sign-in attempts from this address; try again in {secs} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

// ---------------------------------------------------------------------------------------------
// The middleware
// ---------------------------------------------------------------------------------------------

/// What the middleware holds: the settings, the store and the failure counts. One per server;
/// it rides in request extensions so `POST /login` counts against the same limits.
pub struct Guard {
    config: HttpAuthConfig,
    secure_cookie: bool,
    store: AuthStore,
    limiter: FailureLimiter,
    /// To the audit writer ([`audit_log`]).
    audit: mpsc::Sender<AuditEntry>,
}

/// Audit entries waiting for the writer; beyond it a request writes its own entry.
const AUDIT_QUEUE: usize = 4096;
/// Entries written in one transaction.
const AUDIT_BATCH: usize = 256;

impl Guard {
    pub fn new(state: &WebState) -> Arc<Guard> {
        Arc::new(Guard {
            config: state.config.auth.clone(),
            secure_cookie: state.config.node.http_tls,
            audit: state.audit.clone(),
            store: AuthStore::new(state.queue.pool().clone()),
            limiter: FailureLimiter::new(state.config.auth.failures_per_minute),
        })
    }

    async fn audit(&self, entry: AuditEntry) {
        let entry = match self.audit.try_send(entry) {
            Ok(()) => return,
            // A full queue, or the writer gone at shutdown: the request writes its own.
            Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => e,
        };
        if let Err(e) = self.store.record_audit(std::slice::from_ref(&entry)).await {
            warn!(error = %e, "the audit log could not be written");
        }
    }
}

/// The audit log: requests queue entries on the sender; the [`AuditWriter`] (a supervised
/// task) commits them in batches, because a commit (an fsync) per DICOMweb request would add
/// its latency to every query and frame OHIF asks for.
pub fn audit_log(store: AuthStore) -> (mpsc::Sender<AuditEntry>, Arc<AuditWriter>) {
    let (tx, rx) = mpsc::channel::<AuditEntry>(AUDIT_QUEUE);
    (
        tx,
        Arc::new(AuditWriter {
            rx: tokio::sync::Mutex::new(rx),
            store,
        }),
    )
}

/// Writes queued audit entries; a replacement (after a panic) takes the queue over.
pub struct AuditWriter {
    rx: tokio::sync::Mutex<mpsc::Receiver<AuditEntry>>,
    store: AuthStore,
}

impl AuditWriter {
    /// Runs until `stop` (the last stage of a shutdown), then writes what is queued: entries
    /// that come later are written by their requests.
    pub async fn run(&self, stop: CancellationToken) {
        let mut rx = self.rx.lock().await;
        let mut batch = Vec::with_capacity(AUDIT_BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, AUDIT_BATCH) => if n == 0 { return },
                _ = stop.cancelled() => {
                    rx.close();
                    while rx.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
                        self.write(&mut batch).await;
                    }
                    return;
                }
            }
            self.write(&mut batch).await;
        }
    }

    async fn write(&self, batch: &mut Vec<AuditEntry>) {
        if let Err(e) = self.store.record_audit(batch).await {
            warn!(error = %e, entries = batch.len(), "the audit log could not be written");
        }
        batch.clear();
    }
}

/// The parts of the site, by what they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    /// `/api/…`: admin only.
    Api,
    /// `/dicomweb/…`: by method.
    Dicomweb,
    /// `/healthz`, `/readyz`, `/metrics`.
    Health,
    /// An HTML page for people (the viewer's routes, `/status`): anonymous browsers go to the
    /// login page.
    Page { admin_only: bool },
    /// The login page itself, and files without patient data (the viewer's scripts, styles,
    /// app config).
    Public,
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn area(method: &Method, path: &str) -> Area {
    if under(path, "/api") {
        Area::Api
    } else if under(path, "/dicomweb") {
        Area::Dicomweb
    } else if ["/healthz", "/readyz", "/metrics"].contains(&path) {
        Area::Health
    } else if path == "/login" || path == "/logout" {
        Area::Public
    } else if under(path, "/status") {
        Area::Page { admin_only: true }
    } else if (method == Method::GET || method == Method::HEAD)
        && !path.rsplit('/').next().unwrap_or_default().contains('.')
    {
        // The viewer serves its app (index.html) for every path without an extension; files
        // with one are its scripts and styles, which hold no patient data.
        Area::Page { admin_only: false }
    } else {
        Area::Public
    }
}

/// Whether `role` may do `method` in `area` (which needs a principal).
fn permits(role: Role, method: &Method, area: Area) -> bool {
    match (role, area) {
        (_, Area::Public) => true,
        (Role::Admin, _) => true,
        (_, Area::Api) => false,
        (Role::Reader, Area::Dicomweb) => method == Method::GET || method == Method::HEAD,
        (Role::Uploader, Area::Dicomweb) => method == Method::POST,
        (Role::Reader, Area::Health) => true,
        (Role::Uploader, Area::Health) => false,
        (_, Area::Page { admin_only }) => !admin_only,
    }
}

/// The credentials a request carries.
enum Credentials {
    None,
    Bearer(Secret),
    /// An Authorization header of another scheme, or unreadable.
    Unusable,
    Session(Secret),
}

fn credentials(headers: &HeaderMap) -> Credentials {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or_default().trim();
        return match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Credentials::Bearer(Secret::new(token.trim()))
            }
            _ => Credentials::Unusable,
        };
    }
    match session_cookie(headers) {
        Some(id) => Credentials::Session(id),
        None => Credentials::None,
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<Secret> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| Secret::new(value))
}

/// The client's address, for handlers behind the guard (`POST /login` counts failures by it).
#[derive(Debug, Clone, Copy)]
struct Client(Option<IpAddr>);

fn client_of(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn unauthorized(reason: &str) -> Response {
    let mut response = WebError::new(StatusCode::UNAUTHORIZED, reason).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"vcnode\""),
    );
    response
}

fn forbidden(principal: &Principal) -> Response {
    WebError::new(
        StatusCode::FORBIDDEN,
        format!("the role {} may not do this", principal.role),
    )
    .into_response()
}

/// `/login?next=<this request's path and query>`.
fn to_login(request: &Request) -> Response {
    let next = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    Redirect::to(&format!("/login?{query}")).into_response()
}

/// The auth middleware on every route (see the module's documentation).
pub async fn guard(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let area = area(&method, request.uri().path());
    let client = client_of(&request);
    request.extensions_mut().insert(guard.clone());
    request.extensions_mut().insert(Client(client));

    let principal = match credentials(request.headers()) {
        Credentials::None => None,
        Credentials::Session(id) => match guard.store.session_principal(id.expose()).await {
            Ok(p) => p,
            Err(e) => return WebError::internal(e).into_response(),
        },
        Credentials::Bearer(token) => {
            if let Some(wait) = client.and_then(|c| guard.limiter.blocked(c)) {
                return too_many(wait);
            }
            match guard.store.token_principal(token.expose()).await {
                Ok(Some(p)) => Some(p),
                Ok(None) => {
                    if let Some(c) = client {
                        guard.limiter.fail(c);
                    }
                    warn!(client = ?client, "refused an unknown, revoked or expired API token");
                    return unauthorized("the token is unknown, revoked or expired");
                }
                Err(e) => return WebError::internal(e).into_response(),
            }
        }
        // Another scheme (Basic) is no credential of ours; where credentials are required it
        // is refused as such.
        Credentials::Unusable if !guard.config.required => None,
        Credentials::Unusable => {
            return unauthorized("only Authorization: Bearer <token> is accepted");
        }
    };

    let needs_principal = guard.config.required
        && match area {
            Area::Public => false,
            Area::Health => !guard.config.open_health,
            _ => true,
        };
    let principal = match principal {
        Some(p) => {
            if needs_principal && !permits(p.role, &method, area) {
                return forbidden(&p);
            }
            p
        }
        // A lab without authentication: whoever asks may do everything.
        None if !guard.config.required => Principal::anonymous(),
        // Open parts (the login page, the viewer's files, open health): no principal at all.
        None if !needs_principal => return next.run(request).await,
        None => {
            return match area {
                Area::Page { .. } => to_login(&request),
                _ => unauthorized("sign in: Authorization: Bearer <token>, or the login page"),
            }
        }
    };

    let audit = audit_of(&request, &principal, client);
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if let Some(mut entry) = audit {
        entry.status = response.status().as_u16();
        info!(
            target: "vcnode::audit",
            actor = %entry.actor,
            role = %entry.role,
            action = %entry.action,
            method = %entry.method,
            route = %entry.route,
            resource = entry.resource.as_deref(),
            study = entry.study_uid.as_deref(),
            status = entry.status,
            client = entry.client.as_deref(),
            "audit"
        );
        guard.audit(entry).await;
    }
    response
}

/// The audit entry of a request, if it is one that is audited (status filled in later).
fn audit_of(request: &Request, principal: &Principal, client: Option<IpAddr>) -> Option<AuditEntry> {
    let method = request.method();
    let path = request.uri().path();
    // Unmatched paths (404s) are not audited: they did nothing.
    let route = request.extensions().get::<MatchedPath>()?.as_str().to_string();
    let action = if under(path, "/api") {
        if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
            return None;
        }
        "admin"
    } else if under(path, "/dicomweb") {
        match *method {
            Method::POST => "store",
            Method::GET | Method::HEAD => {
                // QIDO-RS searches end in a collection; everything else retrieves.
                let last = route.rsplit('/').next().unwrap_or_default();
                if ["studies", "series", "instances"].contains(&last) {
                    "query"
                } else {
                    "retrieve"
                }
            }
            _ => return None,
        }
    } else {
        return None;
    };
    let params = path_params(&route, path);
    let study_uid = params
        .iter()
        .find(|(name, _)| name == "study")
        .map(|(_, v)| v.clone())
        .or_else(|| study_in_query(request.uri().query()));
    let resource = if action == "admin" {
        params.first().map(|(_, v)| v.clone())
    } else {
        None
    };
    Some(AuditEntry {
        at: now_ms(),
        actor: principal.name.clone(),
        role: principal.role.as_str().to_string(),
        action: action.to_string(),
        method: method.as_str().to_string(),
        route,
        resource,
        study_uid,
        status: 0,
        client: client.map(|c| c.to_string()),
    })
}

/// The values of a route template's `{name}` segments in `path` (at most 128 characters each).
fn path_params(template: &str, path: &str) -> Vec<(String, String)> {
    template
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(t, p)| {
            let name = t.strip_prefix('{')?.strip_suffix('}')?;
            let name = name.trim_start_matches('*');
            Some((name.to_string(), p.chars().take(128).collect()))
        })
        .collect()
}

/// A QIDO-RS `StudyInstanceUID` (or `0020000D`) match in the query, if it names one study.
fn study_in_query(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "StudyInstanceUID" || k.eq_ignore_ascii_case("0020000D"))
        .map(|(_, v)| v.chars().take(128).collect())
        .filter(|v: &String| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Login, logout, the audit API
// ---------------------------------------------------------------------------------------------

/// `GET /login`, `POST /login`, `POST /logout` (outside /api and /dicomweb).
pub(super) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
}

/// `GET /api/audit` (admin, as all of /api).
pub(super) fn api_routes() -> Router<Arc<WebState>> {
    Router::new().route("/audit", get(audit))
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// The login form's fields.
#[derive(Deserialize)]
struct LoginForm {
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
    next: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("next", &self.next)
            .finish()
    }
}

/// Where to go after signing in: a path on this server only (no open redirect: not `//host`,
/// not `/\host`, no scheme), never back to the login page.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                // A header value as it is (the form decodes %XX; a redirect must not fail).
                && n.chars().all(|c| c.is_ascii_graphic())
                && !under(n.split('?').next().unwrap_or_default(), "/login") =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn login_html(next: &str, message: Option<&str>) -> Html<String> {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", html_escape(m)))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>vcnode: sign in</title><style>\
body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}}\
label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.4rem;box-sizing:border-box}}\
button{{margin-top:1rem;padding:.5rem 1.2rem}}.error{{color:#a00}}fieldset{{border:0;padding:0}}\
</style></head><body><h1>vcnode</h1>{message}\
<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
<fieldset><label for=\"username\">User name</label>\
<input id=\"username\" name=\"username\" autocomplete=\"username\" autofocus>\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
</fieldset><p>or</p><fieldset><label for=\"token\">API token</label>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\"></fieldset>\
<button type=\"submit\">Sign in</button></form></body></html>",
        next = html_escape(next),
    ))
}

async fn login_page(Query(q): Query<NextQuery>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        login_html(&safe_next(q.next.as_deref()), None),
    )
        .into_response()
}

fn session_cookie_header(guard: &Guard, value: &str, max_age_s: u64) -> HeaderValue {
    HeaderValue::from_str(&session_cookie_text(value, max_age_s, guard.secure_cookie))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The Set-Cookie value: script cannot read it (HttpOnly), no other site's page sends it
/// (SameSite=Strict), and under HTTPS it never travels in clear text (Secure).
fn session_cookie_text(value: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

async fn login(
    Extension(guard): Extension<Arc<Guard>>,
    Extension(Client(client)): Extension<Client>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if let Some(wait) = client.and_then(|c| guard.limiter.blocked(c)) {
        return too_many(wait);
    }
    let non_empty = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(Secret::new);
    let found = match (
        non_empty(&form.token),
        form.username.as_deref().filter(|u| !u.is_empty()),
    ) {
        (Some(token), _) => guard
            .store
            .token_principal(token.expose())
            .await
            .map(|p| p.map(|p| ("token", p))),
        (None, Some(user)) => {
            let password = non_empty(&form.password).unwrap_or_else(|| Secret::new(""));
            guard
                .store
                .verify_user(user, &password)
                .await
                .map(|p| p.map(|p| ("user", p)))
        }
        (None, None) => Ok(None),
    };
    let (kind, principal) = match found {
        Ok(Some(found)) => found,
        Ok(None) => {
            if let Some(c) = client {
                guard.limiter.fail(c);
            }
            // Not the user name: a password typed into its field would end up in the log.
            warn!(client = ?client, "a sign-in failed");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::CACHE_CONTROL, "no-store")],
                login_html(&next, Some("Wrong user name, password or token.")),
            )
                .into_response();
        }
        Err(e) => return WebError::internal(e).into_response(),
    };
    let lifetime = Duration::from_secs(guard.config.session_hours.saturating_mul(3600));
    let id = match guard.store.open_session(kind, &principal, lifetime).await {
        Ok(id) => id,
        Err(e) => return WebError::internal(e).into_response(),
    };
    info!(target: "vcnode::audit", actor = %principal.name, role = %principal.role, kind, "signed in");
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie_header(&guard, id.expose(), lifetime.as_secs()),
    );
    response
}

async fn logout(Extension(guard): Extension<Arc<Guard>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        if let Err(e) = guard.store.close_session(id.expose()).await {
            return WebError::internal(e).into_response();
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&guard, "", 0));
    response
}

/// `GET /api/audit?since=&until=&actor=&limit=`: newest first.
async fn audit(
    Extension(guard): Extension<Arc<Guard>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let mut f = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    for (key, value) in &pairs {
        match key.as_str() {
            "since" => f.since = Some(super::jobs::parse_time(value)?),
            "until" => f.until = Some(super::jobs::parse_time(value)?),
            "actor" => f.actor = Some(value.clone()),
            "limit" => {
                f.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=super::jobs::MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        WebError::bad_request(format!("limit must be 1 to {}", super::jobs::MAX_LIMIT))
                    })?
            }
            other => {
                return Err(WebError::bad_request(format!(
                    "unknown parameter {other:?} (since, until, actor, limit)"
                )))
            }
        }
    }
    let events = guard.store.audit(&f).await.map_err(WebError::internal)?;
    Ok(Json(json!({ "events": events })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_contract() {
        let get = Method::GET;
        let post = Method::POST;
        let dw = area(&get, "/dicomweb/studies");
        assert_eq!(dw, Area::Dicomweb);
        assert!(permits(Role::Reader, &get, dw));
        assert!(permits(Role::Reader, &Method::HEAD, dw));
        assert!(!permits(Role::Reader, &post, dw));
        assert!(permits(Role::Uploader, &post, dw));
        assert!(!permits(Role::Uploader, &get, dw));
        assert!(permits(Role::Admin, &Method::DELETE, dw));
        assert!(!permits(Role::Reader, &Method::DELETE, dw));
        for role in [Role::Reader, Role::Uploader] {
            assert!(!permits(role, &get, area(&get, "/api/jobs")));
        }
        assert!(permits(Role::Admin, &post, area(&post, "/api/peers")));
        assert_eq!(area(&get, "/apiary"), Area::Page { admin_only: false });
        assert_eq!(area(&get, "/status"), Area::Page { admin_only: true });
        assert_eq!(area(&get, "/viewer"), Area::Page { admin_only: false });
        assert_eq!(area(&get, "/app-config.js"), Area::Public);
        assert_eq!(area(&get, "/login"), Area::Public);
        assert_eq!(area(&get, "/metrics"), Area::Health);
        assert!(!permits(Role::Reader, &get, area(&get, "/status")));
    }

    #[test]
    fn the_session_cookie_is_secure_under_https_only() {
        assert_eq!(
            session_cookie_text("abc", 60, true),
            "vcnode_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!session_cookie_text("abc", 60, false).contains("Secure"));
    }

    #[test]
    fn next_is_a_local_path_only() {
        assert_eq!(
            safe_next(Some("/viewer?StudyInstanceUIDs=1.2")),
            "/viewer?StudyInstanceUIDs=1.2"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "evil",
            "/login?next=/x",
            "/a\r\nb",
            "/caf\u{e9}",
            "/a b",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::new("vcnode_0123456789abcdef");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let form = LoginForm {
            username: Some("alice".into()),
            password: Some("correct horse".into()),
            token: Some("vcnode_feedface".into()),
            next: None,
        };
        let shown = format!("{form:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(
            !shown.contains("correct horse") && !shown.contains("feedface"),
            "{shown}"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer vcnode_feedface"),
        );
        match credentials(&h) {
            Credentials::Bearer(t) => assert!(!format!("{t:?}").contains("feedface")),
            _ => panic!("a bearer token"),
        }
    }

    #[test]
    fn cookies_and_params_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; vcnode_session=abc; c=d"),
        );
        assert_eq!(session_cookie(&h).unwrap().expose(), "abc");
        assert_eq!(
            path_params(
                "/dicomweb/studies/{study}/series/{series}",
                "/dicomweb/studies/1.2/series/3.4"
            ),
            vec![
                ("study".to_string(), "1.2".to_string()),
                ("series".to_string(), "3.4".to_string())
            ]
        );
        assert_eq!(
            study_in_query(Some("StudyInstanceUID=1.2.3&limit=1")),
            Some("1.2.3".into())
        );
        assert_eq!(study_in_query(Some("PatientID=x")), None);
    }

    #[test]
    fn failures_past_the_limit_block_the_address_only() {
        let limiter = FailureLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            limiter.fail(a);
        }
        assert!(limiter.blocked(a).is_none());
        limiter.fail(a);
        let wait = limiter.blocked(a).expect("blocked after 3 failures");
        assert!(
            wait <= FAILURE_WINDOW && wait > Duration::from_secs(50),
            "{wait:?}"
        );
        assert!(limiter.blocked(b).is_none());
    }

    #[test]
    fn passwords_hash_with_a_salt_and_verify() {
        let pw = Secret::new("correct horse");
        let h1 = hash_password(&pw).unwrap();
        let h2 = hash_password(&pw).unwrap();
        assert!(h1.starts_with("$argon2id$"), "{h1}");
        assert_ne!(h1, h2, "a fresh salt each time");
        assert!(verify_password(&pw, &h1));
        assert!(!verify_password(&Secret::new("wrong horse"), &h1));
        assert!(!h1.contains("correct"));
    }
}
