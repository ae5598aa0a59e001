//! The console's SQLite database: accounts, sessions, API tokens, settings, audit log.
//!
//! One connection behind a mutex, used only from `spawn_blocking` so no async thread ever
//! waits on SQLite. The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] are
//! applied in order at start, each in its own transaction. Secrets never reach this
//! module in the clear except password hashes (argon2id PHC strings): session and API
//! tokens are stored as SHA-256 hashes.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{AppError, AppResult};

/// Schema migrations; index + 1 is the `user_version` after applying the entry.
/// Append only: never edit an entry that has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: accounts, sessions, settings, audit log.
    r#"
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
        status        TEXT NOT NULL CHECK (status IN ('pending', 'active', 'disabled')),
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE audit_log (
        id     INTEGER PRIMARY KEY,
        at     INTEGER NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        ip     TEXT NOT NULL
    );
    "#,
    // 2: API tokens for scripts; each has its own role.
    r#"
    CREATE TABLE api_tokens (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        token_hash  TEXT NOT NULL UNIQUE,
        role        TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
        created_by  TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        revoked     INTEGER NOT NULL DEFAULT 0
    );
    "#,
    // 3: API tokens belong to an account (and stop working when it is disabled or
    // deleted) and expire. Tokens made before this get their creator as owner (none when
    // the creator is gone: such a token stops working) and 90 days from creation.
    r#"
    ALTER TABLE api_tokens ADD COLUMN owner_id INTEGER REFERENCES users(id) ON DELETE CASCADE;
    ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
    UPDATE api_tokens SET
        owner_id = (SELECT id FROM users WHERE users.username = api_tokens.created_by),
        expires_at = created_at + 90 * 86400;
    "#,
];

/// Longest lifetime of an API token, in days: a leaked token is worth at most this long.
pub const MAX_TOKEN_DAYS: i64 = 365;
/// Lifetime of an API token when its creator does not choose one.
pub const DEFAULT_TOKEN_DAYS: i64 = 90;

thread_local! {
    /// Set while this thread holds the connection (inside [`Db::call`]).
    static IN_DB_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread holds the database connection. Slow work (argon2) checks
/// this: holding the one connection while hashing would stall every other request.
pub fn in_db_call() -> bool {
    IN_DB_CALL.with(std::cell::Cell::get)
}

struct InDbCall;

impl InDbCall {
    fn enter() -> Self {
        IN_DB_CALL.with(|flag| flag.set(true));
        Self
    }
}

impl Drop for InDbCall {
    fn drop(&mut self) {
        IN_DB_CALL.with(|flag| flag.set(false));
    }
}

/// A handle to the database, cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    /// The longest time one [`Db::call`] held the connection, in microseconds: every
    /// other request waits that long, so it must stay small (tests check it).
    longest_hold_us: Arc<AtomicU64>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Self::from_connection(conn)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> anyhow::Result<Self> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> anyhow::Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            longest_hold_us: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Runs `f` with the connection on a blocking thread. `f` must be quick: every
    /// request waits for the one connection (password hashing happens outside, see
    /// [`in_db_call`]).
    pub async fn call<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> AppResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let longest = self.longest_hold_us.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| AppError::internal(anyhow::anyhow!("database mutex poisoned")))?;
            let started = Instant::now();
            let result = {
                let _marker = InDbCall::enter();
                f(&mut guard)
            };
            let held = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            longest.fetch_max(held, Ordering::Relaxed);
            result
        })
        .await
        .map_err(AppError::internal)?
    }
}

impl Db {
    /// The longest time one call held the connection so far.
    pub fn longest_hold(&self) -> Duration {
        Duration::from_micros(self.longest_hold_us.load(Ordering::Relaxed))
    }
}

/// Applies the migrations that are newer than the database's `user_version`.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let current = usize::try_from(current)?;
    if current > MIGRATIONS.len() {
        anyhow::bail!(
            "database schema version {current} is newer than this console ({})",
            MIGRATIONS.len()
        );
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied database migration");
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A role, from least to most powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Creates and deletes tasks.
    Operator,
    /// Everything, including accounts, tokens and settings.
    Admin,
}

impl Role {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Parses a stored or submitted role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// An account as stored.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Login name, case-insensitively unique.
    pub username: String,
    /// argon2id PHC string.
    #[serde(skip)]
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// `pending`, `active` or `disabled`.
    pub status: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = row.get(3)?;
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        status: row.get(4)?,
        created_at: row.get(5)?,
    })
}

const USER_COLUMNS: &str = "id, username, password_hash, role, status, created_at";

/// Looks an account up by name (case-insensitive).
pub fn user_by_name(conn: &Connection, username: &str) -> rusqlite::Result<Option<User>> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
        params![username],
        user_from_row,
    )
    .optional()
}

/// Looks an account up by id.
pub fn user_by_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<User>> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
        params![id],
        user_from_row,
    )
    .optional()
}

/// All accounts, oldest first.
pub fn list_users(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
    stmt.query_map([], user_from_row)?.collect()
}

/// What registering an account resulted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The first admin, made with the bootstrap token.
    FirstAdmin(i64),
    /// A later account, with the status it got.
    Account {
        /// Row id.
        id: i64,
        /// `pending` or `active`.
        status: &'static str,
    },
    /// The name is taken.
    NameTaken,
    /// Registration is closed.
    Closed,
}

/// How a new account is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// An ordinary registration: a viewer, pending unless approval is off; refused while
    /// registration is closed.
    Ordinary,
    /// Made with the bootstrap token: an active admin, even while registration is closed.
    /// Refused (as [`Registered::Closed`]) once an active admin exists.
    Bootstrap,
}

/// Creates an account. Nobody becomes admin by being first: only a [`Registration::Bootstrap`]
/// makes one. Runs in an immediate transaction so that two bootstrap registrations
/// cannot both become admin.
pub fn register_user(
    conn: &mut Connection,
    username: &str,
    password_hash: &str,
    kind: Registration,
) -> rusqlite::Result<Registered> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let result = if user_by_name(&tx, username)?.is_some() {
        Registered::NameTaken
    } else if kind == Registration::Bootstrap {
        if active_admins(&tx)? > 0 {
            Registered::Closed
        } else {
            tx.execute(
                "INSERT INTO users (username, password_hash, role, status, created_at)
                 VALUES (?1, ?2, 'admin', 'active', ?3)",
                params![username, password_hash, now()],
            )?;
            Registered::FirstAdmin(tx.last_insert_rowid())
        }
    } else if !setting_bool(&tx, SETTING_REGISTRATION_OPEN, true)? {
        Registered::Closed
    } else {
        let status = if setting_bool(&tx, SETTING_REQUIRE_APPROVAL, true)? {
            "pending"
        } else {
            "active"
        };
        tx.execute(
            "INSERT INTO users (username, password_hash, role, status, created_at)
             VALUES (?1, ?2, 'viewer', ?3, ?4)",
            params![username, password_hash, status, now()],
        )?;
        Registered::Account {
            id: tx.last_insert_rowid(),
            status,
        }
    };
    tx.commit()?;
    Ok(result)
}

/// Replaces an account's password hash and ends its other sessions (`keep` is the
/// session that asked, or none).
pub fn set_password(
    conn: &mut Connection,
    id: i64,
    password_hash: &str,
    keep: Option<&str>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![id, password_hash],
    )?;
    tx.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND token_hash IS NOT ?2",
        params![id, keep],
    )?;
    tx.commit()
}

/// Changes an account's role.
pub fn set_role(conn: &Connection, id: i64, role: Role) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE users SET role = ?2 WHERE id = ?1",
        params![id, role.as_str()],
    )
}

/// Changes an account's status; disabling also ends its sessions.
pub fn set_status(conn: &Connection, id: i64, status: &str) -> rusqlite::Result<usize> {
    let n = conn.execute(
        "UPDATE users SET status = ?2 WHERE id = ?1",
        params![id, status],
    )?;
    if status != "active" {
        conn.execute("DELETE FROM sessions WHERE user_id = ?1", params![id])?;
    }
    Ok(n)
}

/// Number of active admins; the console refuses to remove the last one.
pub fn active_admins(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM users WHERE role = 'admin' AND status = 'active'",
        [],
        |row| row.get(0),
    )
}

/// A live session joined with its account.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The account.
    pub user: User,
    /// The session's synchroniser CSRF token.
    pub csrf_token: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// Stores a new session.
pub fn create_session(
    conn: &Connection,
    token_hash: &str,
    user_id: i64,
    csrf_token: &str,
    expires_at: i64,
) -> rusqlite::Result<()> {
    // Expired sessions are swept whenever someone logs in; no background job needed.
    conn.execute(
        "DELETE FROM sessions WHERE expires_at <= ?1",
        params![now()],
    )?;
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, user_id, csrf_token, now(), expires_at],
    )?;
    Ok(())
}

/// Finds a session that has not expired and whose account is active.
pub fn session_by_hash(
    conn: &Connection,
    token_hash: &str,
) -> rusqlite::Result<Option<SessionRow>> {
    conn.query_row(
        "SELECT u.id, u.username, u.password_hash, u.role, u.status, u.created_at,
                s.csrf_token, s.expires_at
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND u.status = 'active'",
        params![token_hash, now()],
        |row| {
            Ok(SessionRow {
                user: user_from_row(row)?,
                csrf_token: row.get(6)?,
                expires_at: row.get(7)?,
            })
        },
    )
    .optional()
}

/// Ends a session.
pub fn delete_session(conn: &Connection, token_hash: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM sessions WHERE token_hash = ?1",
        params![token_hash],
    )?;
    Ok(())
}

/// Whether anyone may register.
pub const SETTING_REGISTRATION_OPEN: &str = "registration_open";
/// Whether new accounts wait for an admin's approval.
pub const SETTING_REQUIRE_APPROVAL: &str = "require_approval";

/// Reads a boolean setting.
pub fn setting_bool(conn: &Connection, key: &str, default: bool) -> rusqlite::Result<bool> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            params![key],
            |row| row.get(0),
        )
        .optional()?;
    Ok(value.map_or(default, |v| v == "true"))
}

/// Writes a boolean setting.
pub fn set_setting_bool(conn: &Connection, key: &str, value: bool) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, if value { "true" } else { "false" }],
    )?;
    Ok(())
}

/// One audit log entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Row id.
    pub id: i64,
    /// When, Unix seconds.
    pub at: i64,
    /// Who: a username, `token:<name>`, or `anonymous`.
    pub actor: String,
    /// What kind of action, e.g. `login`, `task.create`.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Free-form detail.
    pub detail: String,
    /// The client's address as the console saw it.
    pub ip: String,
}

/// Appends to the audit log.
pub fn audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    ip: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, target, detail, ip) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![now(), actor, action, target, detail, ip],
    )?;
    Ok(())
}

/// The newest audit entries.
pub fn recent_audit(conn: &Connection, limit: i64) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, action, target, detail, ip FROM audit_log ORDER BY id DESC LIMIT ?1",
    )?;
    stmt.query_map(params![limit], |row| {
        Ok(AuditEntry {
            id: row.get(0)?,
            at: row.get(1)?,
            actor: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            detail: row.get(5)?,
            ip: row.get(6)?,
        })
    })?
    .collect()
}

/// An API token as stored (the secret itself is never stored).
#[derive(Debug, Clone, Serialize)]
pub struct ApiToken {
    /// Row id.
    pub id: i64,
    /// A label chosen by the admin.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// Who created it.
    pub created_by: String,
    /// When, Unix seconds.
    pub created_at: i64,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The account it acts for; `None` when that account is gone.
    pub owner_id: Option<i64>,
}

const TOKEN_COLUMNS: &str =
    "t.id, t.name, t.role, t.created_by, t.created_at, t.revoked, t.expires_at, t.owner_id";

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    let role: String = row.get(2)?;
    Ok(ApiToken {
        id: row.get(0)?,
        name: row.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        created_by: row.get(3)?,
        created_at: row.get(4)?,
        revoked: row.get::<_, i64>(5)? != 0,
        expires_at: row.get(6)?,
        owner_id: row.get(7)?,
    })
}

/// Stores a new API token by its hash. It acts for `owner_id` and ends at `expires_at`.
pub fn create_token(
    conn: &Connection,
    name: &str,
    token_hash: &str,
    role: Role,
    owner_id: i64,
    created_by: &str,
    expires_at: i64,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO api_tokens (name, token_hash, role, created_by, created_at, owner_id, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![name, token_hash, role.as_str(), created_by, now(), owner_id, expires_at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Finds a token that may be used now: not revoked, not expired, and its owner's account
/// active. Its role is capped at the owner's current role (a demoted owner's tokens are
/// demoted too).
pub fn token_by_hash(conn: &Connection, token_hash: &str) -> rusqlite::Result<Option<ApiToken>> {
    let found = conn
        .query_row(
            &format!(
                "SELECT {TOKEN_COLUMNS}, u.role FROM api_tokens t JOIN users u ON u.id = t.owner_id
                 WHERE t.token_hash = ?1 AND t.revoked = 0 AND t.expires_at > ?2
                   AND u.status = 'active'"
            ),
            params![token_hash, now()],
            |row| {
                let owner_role: String = row.get(8)?;
                Ok((
                    token_from_row(row)?,
                    Role::parse(&owner_role).unwrap_or(Role::Viewer),
                ))
            },
        )
        .optional()?;
    Ok(found.map(|(mut token, owner_role)| {
        token.role = token.role.min(owner_role);
        token
    }))
}

/// All tokens, newest first.
pub fn list_tokens(conn: &Connection) -> rusqlite::Result<Vec<ApiToken>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t ORDER BY t.id DESC"
    ))?;
    stmt.query_map([], token_from_row)?.collect()
}

/// Revokes a token.
pub fn revoke_token(conn: &Connection, id: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE api_tokens SET revoked = 1 WHERE id = ?1",
        params![id],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_are_idempotent() -> anyhow::Result<()> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        migrate(&mut conn)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        assert_eq!(version, MIGRATIONS.len() as i64);
        Ok(())
    }

    #[test]
    fn only_bootstrap_makes_an_admin_later_accounts_are_pending_viewers() -> anyhow::Result<()> {
        use Registration::{Bootstrap, Ordinary};
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        // Being first is no privilege.
        assert!(matches!(
            register_user(&mut conn, "mallory", "h", Ordinary)?,
            Registered::Account {
                status: "pending",
                ..
            }
        ));
        assert_eq!(active_admins(&conn)?, 0);
        assert!(matches!(
            register_user(&mut conn, "alice", "h", Bootstrap)?,
            Registered::FirstAdmin(_)
        ));
        // Once an admin exists, bootstrap is over.
        assert_eq!(
            register_user(&mut conn, "eve", "h", Bootstrap)?,
            Registered::Closed
        );
        assert!(matches!(
            register_user(&mut conn, "bob", "h", Ordinary)?,
            Registered::Account {
                status: "pending",
                ..
            }
        ));
        assert_eq!(
            register_user(&mut conn, "BOB", "h", Ordinary)?,
            Registered::NameTaken
        );
        set_setting_bool(&conn, SETTING_REGISTRATION_OPEN, false)?;
        assert_eq!(
            register_user(&mut conn, "carol", "h", Ordinary)?,
            Registered::Closed
        );
        Ok(())
    }

    #[test]
    fn tokens_end_with_their_owner_and_their_expiry() -> anyhow::Result<()> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        let Registered::FirstAdmin(owner) =
            register_user(&mut conn, "alice", "h", Registration::Bootstrap)?
        else {
            anyhow::bail!("no admin");
        };
        create_token(&conn, "ci", "live", Role::Admin, owner, "alice", now() + 60)?;
        create_token(
            &conn,
            "old",
            "expired",
            Role::Admin,
            owner,
            "alice",
            now() - 1,
        )?;
        assert!(token_by_hash(&conn, "live")?.is_some());
        assert!(token_by_hash(&conn, "expired")?.is_none());
        set_role(&conn, owner, Role::Viewer)?;
        assert_eq!(
            token_by_hash(&conn, "live")?.map(|t| t.role),
            Some(Role::Viewer),
            "a token never has more power than its owner"
        );
        set_status(&conn, owner, "disabled")?;
        assert!(token_by_hash(&conn, "live")?.is_none());
        Ok(())
    }
}
