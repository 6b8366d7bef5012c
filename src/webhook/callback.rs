//! Per-message callbacks without the delivery loop: which `callback_url`s are acceptable, the
//! outbox target (one per host and port) a callback waits in, and the resolver that keeps
//! callbacks off private addresses.
//!
//! API clients choose callback URLs, so the gateway must not become their way into the
//! operator's network (SSRF): URLs are http(s) only, without user names, confined to
//! `[callbacks] allowed_hosts` when set, and, unless `allow_private_addresses`, never to
//! loopback, private, link-local (cloud metadata) or other non-public addresses, whether
//! written as IP literals or as names that resolve to them. Redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

use crate::config::CallbackSettings;

/// The start of every callback outbox target; the rest is the URL's host and port.
pub const TARGET_PREFIX: &str = "callback:";
/// The longest callback URL accepted, in characters.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a callback URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    /// Not an absolute http(s) URL within the limits.
    #[error("{0}")]
    Invalid(String),
    /// The host is not one the operator allows.
    #[error("{0}")]
    HostNotAllowed(String),
}

/// One entry of `allowed_hosts`: a host ("shop.example.com", "192.0.2.7") or every name under
/// a domain ("*.example.com": a.example.com and a.b.example.com, not example.com itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This host exactly (lowercase, as URLs spell it).
    Exact(String),
    /// Any name ending with this (".example.com").
    Suffix(String),
}

impl HostPattern {
    /// Parses an `allowed_hosts` entry.
    ///
    /// # Errors
    ///
    /// When it is not a host name, an IP address (IPv6 in brackets) or "*." and a host name.
    pub fn parse(pattern: &str) -> Result<HostPattern, String> {
        let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, host) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let bad = || {
            format!(
                "{pattern:?} is not a host name (shop.example.com), an IP address ([::1] for \
                 IPv6) or *. followed by a domain (*.example.com)"
            )
        };
        // The URL parser is the judge of what a host is, so patterns and URLs agree.
        let parsed = Url::parse(&format!("http://{host}/")).map_err(|_| bad())?;
        // The parser lets through characters no host name has ("*" among them).
        let host_chars = host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
        if host.is_empty() || !host_chars || parsed.host_str() != Some(host) {
            return Err(bad());
        }
        Ok(if wildcard {
            HostPattern::Suffix(format!(".{host}"))
        } else {
            HostPattern::Exact(host.to_owned())
        })
    }

    /// Whether `host` (as a parsed URL spells it) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// What callback URLs the operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Empty: any host.
    allowed_hosts: Vec<HostPattern>,
    allow_private_addresses: bool,
}

impl Policy {
    /// The policy of `[callbacks]`; None when callbacks are off. Patterns check-config
    /// refuses are left out (allowing nothing more).
    pub fn from_settings(settings: &CallbackSettings) -> Option<Policy> {
        settings.enabled().then(|| Policy {
            allowed_hosts: settings
                .allowed_hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
                .collect(),
            allow_private_addresses: settings.allow_private_addresses,
        })
    }

    /// A policy allowing `hosts` (none: any), and private addresses when `private`.
    pub fn new(hosts: Vec<HostPattern>, private: bool) -> Policy {
        Policy {
            allowed_hosts: hosts,
            allow_private_addresses: private,
        }
    }

    /// Whether callbacks may connect to any address (names are resolved as usual).
    pub fn allows_private_addresses(&self) -> bool {
        self.allow_private_addresses
    }

    /// The URL `url` as it is stored and called, when acceptable.
    ///
    /// # Errors
    ///
    /// [`CallbackUrlError::Invalid`] for anything but an absolute http(s) URL of at most
    /// [`MAX_URL_CHARS`] characters without user name or password;
    /// [`CallbackUrlError::HostNotAllowed`] for a host outside `allowed_hosts` or a private
    /// address when those are not allowed.
    pub fn check(&self, url: &str) -> Result<Url, CallbackUrlError> {
        let invalid = |why: &str| {
            CallbackUrlError::Invalid(format!(
                "callback_url {why}; it must be an absolute http:// or https:// URL of at most \
                 {MAX_URL_CHARS} characters, without user name or password"
            ))
        };
        if url.chars().count() > MAX_URL_CHARS {
            return Err(invalid("is too long"));
        }
        let parsed = Url::parse(url).map_err(|e| invalid(&format!("does not parse ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(&format!("has scheme {:?}", parsed.scheme())));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("has a user name or password"));
        }
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err(invalid("has no host"));
        };
        // Normalizing may lengthen it (percent-encoding): the stored form obeys the limit too.
        if parsed.as_str().chars().count() > MAX_URL_CHARS {
            return Err(invalid("is too long once normalized"));
        }
        if !self.allowed_hosts.is_empty() && !self.allowed_hosts.iter().any(|p| p.matches(host)) {
            return Err(CallbackUrlError::HostNotAllowed(format!(
                "callback_url host {host} is not in [callbacks] allowed_hosts of this gateway"
            )));
        }
        if let Some(ip) = ip_literal(host)
            && !self.allow_private_addresses
            && !is_public(ip)
        {
            return Err(CallbackUrlError::HostNotAllowed(format!(
                "callback_url address {ip} is not public, and [callbacks] \
                 allow_private_addresses is off on this gateway"
            )));
        }
        Ok(parsed)
    }
}

/// The address a URL host names literally ("[::1]" included).
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Whether `ip` is an address on the public internet (not loopback, private, link-local,
/// shared, reserved, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Carrier-grade NAT (100.64.0.0/10), IETF protocol assignments, benchmarking, reserved.
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // Documentation (2001:db8::/32) and the deprecated site-local fec0::/10.
        || (first == 0x2001 && ip.segments()[1] == 0xdb8)
        || (first & 0xffc0) == 0xfec0)
}

/// The outbox target of callbacks to `url`: one per host and port, so each is its own queue.
pub fn target(url: &Url) -> String {
    format!(
        "{TARGET_PREFIX}{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// The outbox target of a stored callback URL; None when it does not parse (it was checked
/// when the message was accepted).
pub fn target_of(url: &str) -> Option<String> {
    Url::parse(url).ok().map(|u| target(&u))
}

/// A resolver that gives only public addresses: a name that resolves to a private one (a
/// rebinding trick, an internal name) is not connected to.
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} has no public address ([callbacks] allow_private_addresses is off)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_host() -> Policy {
        Policy::new(Vec::new(), false)
    }

    fn code(r: Result<Url, CallbackUrlError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(CallbackUrlError::Invalid(_)) => "invalid",
            Err(CallbackUrlError::HostNotAllowed(_)) => "host",
        }
    }

    #[test]
    fn callback_urls_must_be_absolute_http_without_credentials_and_short() {
        let p = any_host();
        assert_eq!(
            p.check("https://shop.example/sms/123").unwrap().as_str(),
            "https://shop.example/sms/123"
        );
        assert_eq!(
            p.check("HTTP://Shop.Example:8080/a?b=c").unwrap().as_str(),
            "http://shop.example:8080/a?b=c"
        );
        for bad in [
            "",
            "/sms/123",
            "shop.example/sms",
            "ftp://shop.example/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://user:pw@shop.example/",
            "https://user@shop.example/",
            "https://:pw@shop.example/",
            "http://",
            "https://shop example/",
            "https://[::1/",
        ] {
            assert_eq!(code(p.check(bad)), "invalid", "{bad:?}");
        }
        let long = format!("https://shop.example/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(code(p.check(&long)), "invalid");
        let just = format!("https://shop.example/{}", "a".repeat(MAX_URL_CHARS - 21));
        assert_eq!(just.chars().count(), MAX_URL_CHARS);
        assert_eq!(code(p.check(&just)), "ok");
        // Characters counted, not bytes; but a URL percent-encoded past the limit is refused.
        let accents = format!("https://shop.example/{}", "é".repeat(1000));
        assert_eq!(code(p.check(&accents)), "invalid");
        assert_eq!(code(p.check(&accents[..201])), "ok");
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let p = any_host();
        for private in [
            "http://127.0.0.1/",
            "http://127.1.2.3:8080/",
            "http://10.0.0.5/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            // The URL parser reads these as IPv4 addresses too.
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            assert_eq!(code(p.check(private)), "host", "{private}");
        }
        assert_eq!(code(p.check("http://93.184.216.34/")), "ok");
        assert_eq!(code(p.check("http://[2606:2800:220:1::]/")), "ok");
        let lan = Policy::new(Vec::new(), true);
        assert_eq!(code(lan.check("http://127.0.0.1:9000/cb")), "ok");
        assert_eq!(code(lan.check("http://[::1]:9000/cb")), "ok");
    }

    #[test]
    fn allowed_hosts_match_exact_names_and_subdomains() {
        let patterns = [
            "shop.example",
            "*.example.com",
            "192.0.2.7",
            "[2001:db8::1]",
        ]
        .iter()
        .map(|p| HostPattern::parse(p).unwrap())
        .collect();
        let p = Policy::new(patterns, true);
        for ok in [
            "https://shop.example/x",
            "https://SHOP.example./x",
            "https://a.example.com/x",
            "https://a.b.example.com:8443/x",
            "http://192.0.2.7/x",
            "http://[2001:db8::1]/x",
        ] {
            assert_eq!(code(p.check(ok)), "ok", "{ok}");
        }
        for refused in [
            "https://example.com/x",
            "https://evil-example.com/x",
            "https://example.com.evil.net/x",
            "https://shop.example.evil/x",
            "https://sub.shop.example/x",
            "http://192.0.2.8/x",
        ] {
            assert_eq!(code(p.check(refused)), "host", "{refused}");
        }
    }

    #[test]
    fn host_patterns_must_be_hosts() {
        assert_eq!(
            HostPattern::parse("*.Example.COM").unwrap(),
            HostPattern::Suffix(".example.com".into())
        );
        assert_eq!(
            HostPattern::parse("shop.example.").unwrap(),
            HostPattern::Exact("shop.example".into())
        );
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "shop.example/x",
            "shop.example:80",
            "user@shop.example",
            "http://shop.example",
            "::1",
            "shop example",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_only_to_private_addresses_are_not_connected_to() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let resolved = PublicResolver.resolve(name).await;
        let Err(e) = resolved else {
            panic!("localhost resolved to a public address");
        };
        assert!(e.to_string().contains("no public address"), "{e}");
    }

    #[test]
    fn every_host_and_port_has_its_own_target() {
        let t = |u: &str| target_of(u).unwrap();
        assert_eq!(t("https://shop.example/a"), "callback:shop.example:443");
        assert_eq!(t("http://shop.example/b"), "callback:shop.example:80");
        assert_eq!(t("http://127.0.0.1:9001/x"), "callback:127.0.0.1:9001");
        assert_eq!(t("http://[::1]:9001/x"), "callback:[::1]:9001");
        assert_ne!(t("http://127.0.0.1:9001/"), t("http://127.0.0.1:9002/"));
        assert_eq!(target_of("not a url"), None);
    }
}
