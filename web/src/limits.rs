//! In-memory rate limits on logins and registrations, and the bound on task-list long
//! polls ([`LongPolls`]).
//!
//! Both limits count *attempts* in a sliding window, and an attempt is counted (reserved)
//! before any work is done for it: the check and the count are one step under one lock, so
//! fifty logins started at the same moment cannot all pass a check that only one of them
//! has recorded yet. A login that turns out right gives its reservation back.
//!
//! Kept in memory: a restart forgets them, which is acceptable for a single-replica
//! console. This module must never block on anything but its own short lock.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failed logins one account may have per window.
pub const MAX_FAILURES_PER_ACCOUNT: usize = 5;
/// Failed logins one client address may have per window (several people behind one NAT).
pub const MAX_FAILURES_PER_IP: usize = 20;
/// The sliding window of both login limits.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Registrations one client address may attempt per [`REGISTRATION_WINDOW`]: a team
/// signing up behind one NAT fits, a script filling the database (and burning argon2 CPU)
/// does not.
pub const MAX_REGISTRATIONS_PER_IP: usize = 10;
/// Registrations everyone together may attempt per window: bounds the pending-account
/// queue an admin must review, and the argon2 work, when the addresses are many.
pub const MAX_REGISTRATIONS_TOTAL: usize = 100;
/// The sliding window of the registration limits.
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Keys kept at most; beyond this, keys whose window has passed are dropped first.
const MAX_TRACKED_KEYS: usize = 10_000;

/// Counts attempts per key in a sliding window.
#[derive(Debug)]
struct SlidingWindow {
    window: Duration,
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SlidingWindow {
    fn new(window: Duration) -> Self {
        Self {
            window,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt under every key, or none when any key is at its limit;
    /// `Err(seconds)` says how long until the next attempt may pass.
    fn reserve(&self, keys: &[(String, usize)]) -> Result<Instant, u64> {
        let now = Instant::now();
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED_KEYS {
            let window = self.window;
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) <= window)
            });
        }
        let mut wait = 0u64;
        for (key, limit) in keys {
            if let Some(times) = map.get_mut(key) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.window)
                {
                    times.pop_front();
                }
                if times.len() >= *limit
                    && let Some(oldest) = times.front()
                {
                    let left = self.window.saturating_sub(now.duration_since(*oldest));
                    wait = wait.max(left.as_secs().max(1));
                }
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for (key, _) in keys {
            map.entry(key.clone()).or_default().push_back(now);
        }
        Ok(now)
    }

    /// Gives back the attempt made at `at` under `key`.
    fn release(&self, key: &str, at: Instant) {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(times) = map.get_mut(key)
            && let Some(index) = times.iter().position(|t| *t == at)
        {
            times.remove(index);
        }
    }

    /// Forgets every attempt under `key`.
    fn clear(&self, key: &str) {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

/// Per-account and per-address limits on failed logins.
///
/// An account accepts at most [`MAX_FAILURES_PER_ACCOUNT`] failed logins per
/// [`FAILURE_WINDOW`]; one client address at most [`MAX_FAILURES_PER_IP`] across all
/// names. While a limit is reached, every login for that account or from that address —
/// right password or not — is refused with 429, so the limit cannot be used to test
/// passwords. A successful login clears the account's counter.
#[derive(Debug)]
pub struct LoginLimiter {
    window: SlidingWindow,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self {
            window: SlidingWindow::new(FAILURE_WINDOW),
        }
    }
}

/// A login attempt counted in advance. It stays counted as a failure unless
/// [`LoginLimiter::succeeded`] or [`LoginLimiter::not_a_failure`] gives it back.
#[derive(Debug)]
#[must_use = "a reservation is counted as a failure unless given back"]
pub struct LoginAttempt {
    account: String,
    address: String,
    at: Instant,
}

fn account_key(username: &str) -> String {
    format!("user:{}", username.to_lowercase())
}

impl LoginLimiter {
    /// Counts a login attempt before it is checked; `Err(seconds)` when a limit is reached.
    pub fn reserve(&self, username: &str, ip: &str) -> Result<LoginAttempt, u64> {
        let account = account_key(username);
        let address = format!("ip:{ip}");
        let at = self.window.reserve(&[
            (account.clone(), MAX_FAILURES_PER_ACCOUNT),
            (address.clone(), MAX_FAILURES_PER_IP),
        ])?;
        Ok(LoginAttempt {
            account,
            address,
            at,
        })
    }

    /// The password was right: the attempt was no failure, and the account's earlier
    /// failures are forgotten.
    pub fn succeeded(&self, attempt: LoginAttempt) {
        self.window.clear(&attempt.account);
        self.window.release(&attempt.address, attempt.at);
    }

    /// The password was right but the account cannot log in (pending, disabled): the
    /// attempt does not count, earlier failures stay.
    pub fn not_a_failure(&self, attempt: LoginAttempt) {
        self.window.release(&attempt.account, attempt.at);
        self.window.release(&attempt.address, attempt.at);
    }
}

/// Per-address and overall limits on registration attempts (see
/// [`MAX_REGISTRATIONS_PER_IP`] and [`MAX_REGISTRATIONS_TOTAL`]). Every attempt counts,
/// accepted or not, because each one costs an argon2 hash.
#[derive(Debug)]
pub struct RegistrationLimiter {
    window: SlidingWindow,
}

impl Default for RegistrationLimiter {
    fn default() -> Self {
        Self {
            window: SlidingWindow::new(REGISTRATION_WINDOW),
        }
    }
}

impl RegistrationLimiter {
    /// Counts a registration attempt from `ip`; `Err(seconds)` when a limit is reached.
    pub fn reserve(&self, ip: &str) -> Result<(), u64> {
        self.window
            .reserve(&[
                (format!("ip:{ip}"), MAX_REGISTRATIONS_PER_IP),
                ("all".to_owned(), MAX_REGISTRATIONS_TOTAL),
            ])
            .map(|_| ())
    }
}

/// Task-list long polls (`/tasks/rows?wait=`) one user (or API token) may have waiting
/// at once: each holds an API-server watch for up to 25 s. A person with a few tabs of
/// the task list open needs one each; 4 covers that, and a script opening a hundred gets
/// 429 for the rest.
pub const MAX_LONG_POLLS_PER_USER: usize = 4;
/// Task-list long polls waiting at once in all: the same bound as the live streams
/// (`pages::live::MAX_LIVE_STREAMS`), so the console never holds more than 64 + 64
/// watches on the API server.
pub const MAX_LONG_POLLS: usize = 64;

/// Counts the long polls waiting now, per user and in all.
#[derive(Debug, Default)]
pub struct LongPolls {
    waiting: Mutex<HashMap<String, usize>>,
}

/// One long poll's place, given back when it is dropped.
#[derive(Debug)]
pub struct LongPoll {
    polls: std::sync::Arc<LongPolls>,
    user: String,
}

impl LongPolls {
    /// A place for one more long poll of `user`, or `None` when the user (or everyone)
    /// is at the bound.
    pub fn try_start(self: &std::sync::Arc<Self>, user: &str) -> Option<LongPoll> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = waiting.values().sum();
        let mine = waiting.get(user).copied().unwrap_or(0);
        if mine >= MAX_LONG_POLLS_PER_USER || total >= MAX_LONG_POLLS {
            return None;
        }
        waiting.insert(user.to_owned(), mine + 1);
        Some(LongPoll {
            polls: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        let mut waiting = self.polls.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = waiting.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                waiting.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_limiter_blocks_after_the_account_limit() {
        let limiter = LoginLimiter::default();
        for _ in 0..MAX_FAILURES_PER_ACCOUNT {
            let _failed = limiter.reserve("Alice", "1.2.3.4").expect("allowed");
        }
        assert!(limiter.reserve("alice", "5.6.7.8").is_err());
        assert!(limiter.reserve("bob", "5.6.7.8").is_ok());
    }

    #[test]
    fn reservations_count_before_the_outcome_is_known() {
        let limiter = LoginLimiter::default();
        // Five attempts in flight, none finished: the sixth is refused already.
        let in_flight: Vec<_> = (0..MAX_FAILURES_PER_ACCOUNT)
            .map(|_| limiter.reserve("carol", "1.1.1.1").expect("allowed"))
            .collect();
        assert!(limiter.reserve("carol", "1.1.1.1").is_err());
        // One of them was the right password: the account is open again.
        let mut in_flight = in_flight.into_iter();
        limiter.succeeded(in_flight.next().expect("one"));
        assert!(limiter.reserve("carol", "1.1.1.1").is_ok());
    }

    #[test]
    fn right_password_on_a_pending_account_is_not_a_failure() {
        let limiter = LoginLimiter::default();
        for _ in 0..MAX_FAILURES_PER_ACCOUNT * 2 {
            let attempt = limiter.reserve("dave", "2.2.2.2").expect("allowed");
            limiter.not_a_failure(attempt);
        }
        assert!(limiter.reserve("dave", "2.2.2.2").is_ok());
    }

    #[test]
    fn registrations_are_limited_per_address() {
        let limiter = RegistrationLimiter::default();
        for _ in 0..MAX_REGISTRATIONS_PER_IP {
            assert!(limiter.reserve("3.3.3.3").is_ok());
        }
        assert!(limiter.reserve("3.3.3.3").is_err());
        assert!(limiter.reserve("4.4.4.4").is_ok());
    }

    #[test]
    fn long_polls_are_bounded_per_user_and_in_all_and_given_back() {
        let polls = std::sync::Arc::new(LongPolls::default());
        let mine: Vec<LongPoll> = (0..MAX_LONG_POLLS_PER_USER)
            .filter_map(|_| polls.try_start("vince"))
            .collect();
        assert_eq!(mine.len(), MAX_LONG_POLLS_PER_USER);
        assert!(polls.try_start("vince").is_none(), "past the user's bound");
        drop(mine);
        assert!(polls.try_start("vince").is_some(), "places are given back");
        let everyone: Vec<LongPoll> = (0..MAX_LONG_POLLS * 2)
            .filter_map(|i| polls.try_start(&format!("user{i}")))
            .collect();
        assert_eq!(everyone.len(), MAX_LONG_POLLS);
    }
}
