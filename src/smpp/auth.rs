//! Integrator accounts of the SMPP server: password hashes, the decision on a bind, and the
//! guard against password guessing. No I/O; the clock is passed in.
//!
//! Passwords are stored in the configuration only as Argon2id hashes in PHC form
//! (`parla hash-password` makes one); verification is constant-time (argon2's own comparison).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use password_hash::rand_core::OsRng;

use crate::config::{SmppAccountSettings, SmppBindMode};

use super::frame::BindMode;
use super::session::{ESME_RALYBND, ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RINVSYSID};

/// The PHC string (Argon2id, random salt) to put in `password_hash`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `hash` is a PHC string this module can verify against.
pub fn check_hash(hash: &str) -> Result<(), String> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches `hash` (false for a hash that does not parse).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Whether an account may bind in `mode`.
fn allows(account: &SmppAccountSettings, mode: BindMode) -> bool {
    account.bind_modes.iter().any(|m| {
        matches!(
            (m, mode),
            (SmppBindMode::Transceiver, BindMode::Transceiver)
                | (SmppBindMode::Transmitter, BindMode::Transmitter)
                | (SmppBindMode::Receiver, BindMode::Receiver)
                | (
                    SmppBindMode::TransmitterReceiver,
                    BindMode::Transmitter | BindMode::Receiver
                )
        )
    })
}

/// What a bind attempt asks.
#[derive(Debug, Clone, Copy)]
pub struct BindAttempt<'a> {
    /// The bind's system_id.
    pub system_id: &'a str,
    /// The bind's password.
    pub password: &'a str,
    /// Which bind.
    pub mode: BindMode,
    /// Where the connection comes from.
    pub peer: IpAddr,
    /// Binds of this system_id open now.
    pub open_binds: usize,
}

/// Judges a bind: the account it binds, or the command_status to refuse it with
/// (ESME_RINVSYSID unknown account or address not allowed, ESME_RINVPASWD wrong password,
/// ESME_RBINDFAIL bind mode not allowed, ESME_RALYBND too many binds). The password is
/// checked (at full cost) before anything that would tell an unknown account from a known one.
pub fn judge<'a>(
    accounts: &'a [SmppAccountSettings],
    attempt: &BindAttempt<'_>,
) -> Result<&'a SmppAccountSettings, u32> {
    let Some(account) = accounts.iter().find(|a| a.system_id == attempt.system_id) else {
        // Spend the same time as a real check, so timing does not reveal account names.
        let _ = verify_password(&DUMMY_HASH, attempt.password);
        return Err(ESME_RINVSYSID);
    };
    if !verify_password(&account.password_hash, attempt.password) {
        return Err(ESME_RINVPASWD);
    }
    if !account.allowed_ips.is_empty()
        && !account
            .allowed_ips
            .iter()
            .any(|net| net.contains(&attempt.peer))
    {
        return Err(ESME_RINVSYSID);
    }
    if !allows(account, attempt.mode) {
        return Err(ESME_RBINDFAIL);
    }
    if attempt.open_binds >= account.max_binds {
        return Err(ESME_RALYBND);
    }
    Ok(account)
}

/// A hash of a password no one knows (made once): unknown accounts are verified against it so
/// they cost as much time as known ones.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password(&format!("{:x}", fastrand::u128(..))).unwrap_or_default());

/// Failed binds per client address after which its binds are refused for a while.
pub const GUESS_LIMIT: u32 = 5;
/// The first lockout; it doubles with each failure past the limit, up to [`MAX_LOCKOUT`].
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(3600);
/// Addresses remembered at most; the oldest entries go first.
pub const MAX_TRACKED: usize = 10_000;

/// Counts failed binds per client address and locks out those that keep failing, so a
/// password cannot be guessed at network speed.
#[derive(Debug, Default)]
pub struct GuessGuard {
    failures: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl GuessGuard {
    /// Whether `peer` may try a bind now.
    pub fn may_try(&self, peer: IpAddr, now: Instant) -> bool {
        self.failures
            .get(&peer)
            .and_then(|f| f.locked_until)
            .is_none_or(|until| now >= until)
    }

    /// Records a refused bind; returns the lockout it started, if any.
    pub fn failed(&mut self, peer: IpAddr, now: Instant) -> Option<Duration> {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&peer) {
            self.forget_oldest();
        }
        let entry = self.failures.entry(peer).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let over = entry.count.checked_sub(GUESS_LIMIT)?;
        let lockout = FIRST_LOCKOUT
            .saturating_mul(1u32.checked_shl(over.min(16)).unwrap_or(u32::MAX))
            .min(MAX_LOCKOUT);
        entry.locked_until = Some(now + lockout);
        Some(lockout)
    }

    /// A successful bind clears the address's record.
    pub fn succeeded(&mut self, peer: IpAddr) {
        self.failures.remove(&peer);
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .failures
            .iter()
            .min_by_key(|(_, f)| f.last)
            .map(|(ip, _)| *ip)
        {
            self.failures.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(system_id: &str, password: &str) -> SmppAccountSettings {
        SmppAccountSettings {
            system_id: system_id.into(),
            password_hash: hash_password(password).unwrap(),
            ..SmppAccountSettings::default()
        }
    }

    fn attempt<'a>(system_id: &'a str, password: &'a str, mode: BindMode) -> BindAttempt<'a> {
        BindAttempt {
            system_id,
            password,
            mode,
            peer: "127.0.0.1".parse().unwrap(),
            open_binds: 0,
        }
    }

    #[test]
    fn hashes_verify_only_their_password() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(check_hash(&hash).is_ok());
        assert!(verify_password(&hash, "s3cret"));
        assert!(!verify_password(&hash, "s3cret "));
        assert!(!verify_password("not a hash", "s3cret"));
        assert!(check_hash("not a hash").is_err());
        // Two hashes of one password differ (random salt).
        assert_ne!(hash, hash_password("s3cret").unwrap());
        assert!(check_hash(&DUMMY_HASH).is_ok());
    }

    #[test]
    fn binds_are_judged_with_the_status_smpp_names() {
        let mut shop = account("shop", "pw1");
        shop.bind_modes = vec![SmppBindMode::Transmitter];
        shop.max_binds = 1;
        let accounts = vec![shop, account("crm", "pw2")];
        let ok = judge(&accounts, &attempt("shop", "pw1", BindMode::Transmitter)).unwrap();
        assert_eq!(ok.system_id, "shop");
        assert_eq!(
            judge(&accounts, &attempt("nobody", "pw1", BindMode::Transmitter)).unwrap_err(),
            ESME_RINVSYSID
        );
        assert_eq!(
            judge(&accounts, &attempt("shop", "pw2", BindMode::Transmitter)).unwrap_err(),
            ESME_RINVPASWD
        );
        assert_eq!(
            judge(&accounts, &attempt("shop", "pw1", BindMode::Receiver)).unwrap_err(),
            ESME_RBINDFAIL
        );
        let mut second = attempt("shop", "pw1", BindMode::Transmitter);
        second.open_binds = 1;
        assert_eq!(judge(&accounts, &second).unwrap_err(), ESME_RALYBND);
        // transmitter_receiver allows both halves; the default allows every mode.
        let mut split = account("split", "pw");
        split.bind_modes = vec![SmppBindMode::TransmitterReceiver];
        let accounts = vec![split, account("any", "pw")];
        assert!(judge(&accounts, &attempt("split", "pw", BindMode::Receiver)).is_ok());
        assert!(judge(&accounts, &attempt("split", "pw", BindMode::Transceiver)).is_err());
        for mode in [
            BindMode::Transmitter,
            BindMode::Receiver,
            BindMode::Transceiver,
        ] {
            assert!(judge(&accounts, &attempt("any", "pw", mode)).is_ok());
        }
    }

    #[test]
    fn client_addresses_can_be_restricted() {
        let mut shop = account("shop", "pw");
        shop.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let accounts = vec![shop];
        let mut from = attempt("shop", "pw", BindMode::Transceiver);
        assert_eq!(judge(&accounts, &from).unwrap_err(), ESME_RINVSYSID);
        from.peer = "10.1.2.3".parse().unwrap();
        assert!(judge(&accounts, &from).is_ok());
        from.peer = "::1".parse().unwrap();
        assert!(judge(&accounts, &from).is_ok());
    }

    #[test]
    fn guessing_locks_an_address_out_for_longer_each_time() {
        let mut guard = GuessGuard::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        for _ in 1..GUESS_LIMIT {
            assert_eq!(guard.failed(ip, t0), None);
            assert!(guard.may_try(ip, t0));
        }
        assert_eq!(guard.failed(ip, t0), Some(FIRST_LOCKOUT));
        assert!(!guard.may_try(ip, t0));
        assert!(guard.may_try(other, t0));
        let later = t0 + FIRST_LOCKOUT;
        assert!(guard.may_try(ip, later));
        assert_eq!(guard.failed(ip, later), Some(FIRST_LOCKOUT * 2));
        for _ in 0..40 {
            guard.failed(ip, later);
        }
        assert_eq!(guard.failed(ip, later), Some(MAX_LOCKOUT));
        guard.succeeded(ip);
        assert!(guard.may_try(ip, later));
    }

    #[test]
    fn the_guard_remembers_a_bounded_number_of_addresses() {
        let mut guard = GuessGuard::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            guard.failed(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(guard.failures.len() <= MAX_TRACKED);
    }
}
