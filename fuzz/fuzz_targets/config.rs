//! Fuzzes `parla::config::load` on arbitrary TOML files: what an operator (or a typo) can put in
//! /etc/parla/parla.toml.
//!
//! Properties: never a panic; an error names at least one problem and every problem has a
//! non-empty key path and message; accepted settings pass the range checks `load` promises.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use parla::config::{ConfigSource, load, no_env};

/// One file per fuzzing process, rewritten for each input.
fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("parla-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz temp dir");
        dir.join("parla.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = config_path();
    std::fs::write(path, text.as_bytes()).expect("write the fuzz config file");
    match load(&ConfigSource::File(path.clone()), no_env()) {
        Ok(s) => {
            assert!(s.http.tokens.is_empty() || s.http.tokens.iter().all(|t| t.len() >= 16));
            assert!(!s.http.tokens.is_empty() || s.http.listen.ip().is_loopback());
            assert!((1024..=16 * 1024 * 1024).contains(&s.http.max_body_bytes));
            assert!(s.http.max_concurrent_requests >= 1);
            assert!(s.store.cache_capacity_mb >= 1 && s.store.max_group >= 1);
            assert!(s.defaults.validity >= Duration::from_secs(60));
            assert!(s.defaults.max_parts >= 1);
            if let Some(region) = &s.defaults.region {
                assert!(
                    parla::phone::region(Some(region)).is_some(),
                    "region {region:?}"
                );
            }
            let r = &s.retry;
            assert!(!r.initial_backoff.is_zero() && r.max_backoff >= r.initial_backoff);
            assert!((1.0..=100.0).contains(&r.multiplier));
            assert!((0.0..=1.0).contains(&r.jitter));
            assert!(r.max_attempts >= 1);
            assert!((0.0..=1.0).contains(&s.sim.failure_share));
            assert!((0.0..=1.0).contains(&s.sim.reply_share));
            assert!(s.sim.window >= 1);
            assert!(!s.sim.name.is_empty() && !s.sim.name.contains(char::is_whitespace));
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "Err without any problem");
            for problem in &errors.0 {
                assert!(
                    !problem.key.is_empty(),
                    "problem without a key: {problem:?}"
                );
                assert!(
                    !problem.message.is_empty(),
                    "problem without a message: {problem:?}"
                );
            }
            // The Display form lists every problem.
            let _ = errors.to_string();
        }
    }
});
