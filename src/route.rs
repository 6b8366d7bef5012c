//! Routing: which channels may send a message, and in which order.
//!
//! A route names destination prefixes and an ordered list of steps; each step is one channel or
//! several that share the load. A message goes to the first step with a channel that is up
//! (failover when one is down), and to the next step when a channel of its step refuses it
//! for good (failover on refusal). Messages no route's prefix matches take the default route:
//! the route without prefixes, or, when there is none, one step with every channel.
//!
//! The queue is kept per *lane*, a route and the step a message has reached, so each channel
//! reads only the messages it may take: a channel takes lane (route, step) when it belongs to
//! the first step at or after `step` that has a channel up. A message's lane follows from its
//! recipient and the channel that tried it last ([`Router::lane`]), so it needs no stored
//! field of its own.
//!
//! A message pinned to a channel (a reply in a conversation goes out on the channel the customer
//! wrote on) waits in a pinned lane of its route: its channel takes it while up; while it is not
//! (down, removed, receive-only), the channels of the route's first step do, as they would
//! take the route's lane 0. Refused for good by its channel, it goes to the route's first step.
//!
//! Customers' messages are routed too, to the integrator account they answer
//! ([`ReplyRules`]). Pure: no I/O.

use serde::{Deserialize, Serialize};

/// A queue lane: the route's index in the high byte, the step in the low byte.
pub type Lane = u16;

/// `[[route]]` as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSettings {
    /// Destination prefixes in E.164 ("+39", "+4915"); none: the default route.
    pub prefixes: Vec<String>,
    /// The steps in order: a channel's name, or a list of channels that share the load.
    pub channels: Vec<RouteStep>,
}

/// One step of a route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RouteStep {
    /// One channel.
    One(String),
    /// Channels that share the load.
    Shared(Vec<String>),
}

impl RouteStep {
    fn channels(&self) -> Vec<String> {
        match self {
            RouteStep::One(name) => vec![name.clone()],
            RouteStep::Shared(names) => names.clone(),
        }
    }
}

/// Most routes and most steps per route (a lane keeps each in one byte).
pub const MAX_ROUTES: usize = 255;

/// Step numbers from here on are pinned lanes: `PINNED + i` holds the route's messages pinned
/// to the i-th configured channel.
const PINNED: usize = 0x80;
/// Channels a message can be pinned to (later ones: the pin is ignored, the route serves).
const MAX_PINNED: usize = 0x7f;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    prefixes: Vec<String>,
    steps: Vec<Vec<String>>,
}

/// The routes in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// Configured routes with prefixes, then the default route last.
    routes: Vec<Route>,
    /// Every channel, in configuration order: what messages can be pinned to.
    channels: Vec<String>,
}

impl Default for Router {
    /// One default route whose one step is every channel: any channel takes any message.
    fn default() -> Self {
        Router {
            routes: vec![Route {
                prefixes: Vec::new(),
                steps: vec![Vec::new()],
            }],
            channels: Vec::new(),
        }
    }
}

impl Router {
    /// The routes of `settings` (checked by the configuration already); `channels` are every
    /// channel's name, in configuration order, for the implicit default route.
    pub fn new(settings: &[RouteSettings], channels: &[String]) -> Router {
        let mut routes: Vec<Route> = settings
            .iter()
            .filter(|r| !r.prefixes.is_empty())
            .map(|r| Route {
                prefixes: r.prefixes.clone(),
                steps: r.channels.iter().map(RouteStep::channels).collect(),
            })
            .collect();
        let default = settings
            .iter()
            .find(|r| r.prefixes.is_empty())
            .map(|r| r.channels.iter().map(RouteStep::channels).collect())
            .unwrap_or_else(|| vec![channels.to_vec()]);
        routes.push(Route {
            prefixes: Vec::new(),
            steps: default,
        });
        routes.truncate(MAX_ROUTES);
        Router {
            routes,
            channels: channels.iter().take(MAX_PINNED).cloned().collect(),
        }
    }

    /// Whether routing is the default (any channel takes any message).
    pub fn is_trivial(&self) -> bool {
        self.routes.len() == 1 && self.routes[0].steps.len() <= 1
    }

    /// The index of the route for a recipient: the longest matching prefix, else the default.
    fn route_of(&self, to: &str) -> usize {
        let mut best: Option<(usize, usize)> = None;
        for (i, route) in self.routes.iter().enumerate() {
            for prefix in &route.prefixes {
                if to.starts_with(prefix.as_str()) && best.is_none_or(|(_, len)| prefix.len() > len)
                {
                    best = Some((i, prefix.len()));
                }
            }
        }
        best.map_or(self.routes.len() - 1, |(i, _)| i)
    }

    /// The step of `channel` in `route` (0 when it has none there).
    fn step_of(&self, route: usize, channel: Option<&str>) -> usize {
        let Some(channel) = channel else { return 0 };
        self.routes[route]
            .steps
            .iter()
            .position(|step| step.iter().any(|c| c == channel))
            .unwrap_or(0)
    }

    /// The lane of a queued message: its route, at the step of the channel that tried it last
    /// (a transient failure keeps it there; [`Router::failover`] moves it on); a message
    /// `pinned` to a channel waits in that channel's pinned lane until another channel tried it.
    pub fn lane(&self, to: &str, last_channel: Option<&str>, pinned: Option<&str>) -> Lane {
        let route = self.route_of(to);
        if let Some(i) = pinned.and_then(|p| self.pin_index(p))
            && last_channel.is_none_or(|c| c == self.channels[i])
        {
            return lane(route, PINNED + i);
        }
        let step = self.step_of(route, last_channel);
        lane(route, step)
    }

    fn pin_index(&self, channel: &str) -> Option<usize> {
        self.channels.iter().position(|c| c == channel)
    }

    /// Every lane there is.
    pub fn lanes(&self) -> Vec<Lane> {
        let pinned = self.channels.len();
        self.routes
            .iter()
            .enumerate()
            .flat_map(|(r, route)| {
                (0..route.steps.len().max(1))
                    .chain(PINNED..PINNED + pinned)
                    .map(move |s| lane(r, s))
            })
            .collect()
    }

    /// The lanes `channel` takes messages from, given which channels are up: those where it
    /// belongs to the first step (at or after the lane's) that has a channel up; its own
    /// pinned lanes while it is up; and other channels' pinned lanes while those are not, where
    /// it takes lane 0. With the default routing, every up channel takes lane 0.
    pub fn lanes_for(&self, channel: &str, is_up: impl Fn(&str) -> bool) -> Vec<Lane> {
        if !is_up(channel) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (r, route) in self.routes.iter().enumerate() {
            let any_channel = route.steps.iter().all(|step| step.is_empty());
            for s in 0..route.steps.len() {
                let serving = route.steps[s..]
                    .iter()
                    .find(|step| step.iter().any(|c| is_up(c)));
                if any_channel || serving.is_some_and(|step| step.iter().any(|c| c == channel)) {
                    out.push(lane(r, s));
                }
            }
            let takes_lane_0 = out.contains(&lane(r, 0));
            for (i, pinned) in self.channels.iter().enumerate() {
                if pinned == channel || (!is_up(pinned) && takes_lane_0) {
                    out.push(lane(r, PINNED + i));
                }
            }
        }
        out
    }

    /// After `channel` refused a message for good: the first channel of the next step of the
    /// message's route, which it should be handed to, or None when no step is left. A message
    /// refused by the channel it was `pinned` to never went the route's way: it goes to the
    /// route's first step without that channel.
    pub fn failover(&self, to: &str, channel: &str, pinned: Option<&str>) -> Option<&str> {
        let route = &self.routes[self.route_of(to)];
        let has = |step: &Vec<String>| step.iter().any(|c| c == channel);
        let next = if pinned == Some(channel) {
            route.steps.iter().find(|step| !has(step))
        } else {
            let step = route.steps.iter().position(has)?;
            route.steps.get(step + 1)
        };
        next.and_then(|step| step.first()).map(String::as_str)
    }

    /// A fingerprint of the routes, stored with the queue: when it changes, queued messages are
    /// filed again under their new lanes.
    pub fn fingerprint(&self) -> u64 {
        let mut text = String::new();
        for route in &self.routes {
            text.push_str(&route.prefixes.join(","));
            text.push('|');
            for step in &route.steps {
                text.push_str(&step.join(","));
                text.push(';');
            }
            text.push('\n');
        }
        // Pinned lanes are numbered by channel.
        text.push_str(&self.channels.join(","));
        u64::from_str_radix(&crate::message::fingerprint(text.as_bytes()), 16).unwrap_or(0)
    }
}

fn lane(route: usize, step: usize) -> Lane {
    let r = u16::try_from(route.min(255)).unwrap_or(255);
    let s = u16::try_from(step.min(255)).unwrap_or(255);
    (r << 8) | s
}

/// Which integrator account a customer's message goes to.
#[derive(Debug, Clone, Default)]
pub struct ReplyRules {
    /// The accounts, in configuration order (the first match wins within each rule).
    pub accounts: Vec<ReplyAccount>,
    /// How long after an account's message to a customer that customer's message counts as an
    /// answer to it.
    pub conversation_window_ms: crate::message::Millis,
}

/// One account that may receive customers' messages.
#[derive(Debug, Clone)]
pub struct ReplyAccount {
    /// The outbox target: "smpp:" + system_id.
    pub target: String,
    /// The account's system_id (what submitted messages record as their origin).
    pub account: String,
    /// The numbers whose incoming messages are the account's.
    pub numbers: Vec<String>,
    /// Messages whose first word is one of these (any case) are the account's.
    pub keywords: Vec<String>,
    /// The account takes messages no other rule gives anyone.
    pub catch_all: bool,
}

impl ReplyRules {
    /// The rules of the SMPP server's accounts (`[[smpp.server.account]]` reply_numbers,
    /// reply_keywords, catch_all_replies; `[smpp.server]` conversation_window).
    pub fn from_server(server: &crate::config::SmppServerSettings) -> Self {
        ReplyRules {
            accounts: server
                .account
                .iter()
                .map(|a| ReplyAccount {
                    target: crate::store::smpp_target(&a.system_id),
                    account: a.system_id.clone(),
                    numbers: a.reply_numbers.clone(),
                    keywords: a.reply_keywords.clone(),
                    catch_all: a.catch_all_replies,
                })
                .collect(),
            conversation_window_ms: i64::try_from(server.conversation_window.as_millis())
                .unwrap_or(i64::MAX),
        }
    }

    /// Precedence: (1) keyword: the first word of the text, case-insensitive, equals one of an
    /// account's keywords; (2) conversation: `conversation_account` (the account that submitted
    /// the latest message to this customer within the window, computed by the store); (3)
    /// number: `to` equals one of an account's numbers (compared without a leading '+'); (4) the
    /// catch_all account. None: the reply goes to no account (it is still stored and listed by
    /// the API).
    pub fn target_for(
        &self,
        to: &str,
        text: &str,
        conversation_account: Option<&str>,
    ) -> Option<&ReplyAccount> {
        let first_word = text.split_whitespace().next().map(str::to_lowercase);
        let by_keyword = first_word.and_then(|word| {
            self.accounts
                .iter()
                .find(|a| a.keywords.iter().any(|k| k.to_lowercase() == word))
        });
        let by_conversation = || {
            conversation_account.and_then(|name| self.accounts.iter().find(|a| a.account == name))
        };
        let by_number = || {
            let to = without_plus(to);
            self.accounts
                .iter()
                .find(|a| a.numbers.iter().any(|n| without_plus(n) == to))
        };
        by_keyword
            .or_else(by_conversation)
            .or_else(by_number)
            .or_else(|| self.accounts.iter().find(|a| a.catch_all))
    }
}

/// A number without its leading '+', so "+39..." and "39..." compare equal.
pub(crate) fn without_plus(number: &str) -> &str {
    number.strip_prefix('+').unwrap_or(number)
}

/// Problems of `[[route]]` tables: (key path, message). `channels` are the configured
/// channels' names.
pub fn check(settings: &[RouteSettings], channels: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if settings.len() >= MAX_ROUTES {
        out.push(("route".into(), format!("at most {} routes", MAX_ROUTES - 1)));
    }
    let defaults = settings.iter().filter(|r| r.prefixes.is_empty()).count();
    if defaults > 1 {
        out.push((
            "route".into(),
            "only one route may leave out prefixes (the default route)".into(),
        ));
    }
    let mut seen_prefixes: Vec<&str> = Vec::new();
    for (i, route) in settings.iter().enumerate() {
        for (j, prefix) in route.prefixes.iter().enumerate() {
            let digits = prefix.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                out.push((
                    format!("route.{i}.prefixes.{j}"),
                    "a prefix in E.164 form, like \"+39\" or \"+4915\"".into(),
                ));
            } else if seen_prefixes.contains(&prefix.as_str()) {
                out.push((
                    format!("route.{i}.prefixes.{j}"),
                    format!("{prefix} is in another route already"),
                ));
            }
            seen_prefixes.push(prefix);
        }
        if route.channels.is_empty() {
            out.push((
                format!("route.{i}.channels"),
                "at least one channel is required".into(),
            ));
        }
        if route.channels.len() > 255 {
            out.push((format!("route.{i}.channels"), "at most 255 steps".into()));
        }
        let mut named: Vec<String> = Vec::new();
        for (j, step) in route.channels.iter().enumerate() {
            let names = step.channels();
            if names.is_empty() {
                out.push((
                    format!("route.{i}.channels.{j}"),
                    "an empty list of channels".into(),
                ));
            }
            for name in names {
                if !channels.contains(&name.as_str()) {
                    out.push((
                        format!("route.{i}.channels.{j}"),
                        format!(
                            "{name} is not a configured channel (known: {})",
                            channels.join(", ")
                        ),
                    ));
                } else if named.contains(&name) {
                    out.push((
                        format!("route.{i}.channels.{j}"),
                        format!("{name} is named twice in this route"),
                    ));
                }
                named.push(name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str) -> RouteStep {
        RouteStep::One(name.into())
    }

    fn router() -> Router {
        let routes = vec![
            RouteSettings {
                prefixes: vec!["+39".into()],
                channels: vec![
                    RouteStep::Shared(vec!["modem1".into(), "modem2".into()]),
                    one("carrier"),
                ],
            },
            RouteSettings {
                prefixes: vec!["+393".into()],
                channels: vec![one("carrier"), one("modem1")],
            },
            RouteSettings {
                prefixes: Vec::new(),
                channels: vec![one("carrier")],
            },
        ];
        Router::new(&routes, &[])
    }

    #[test]
    fn the_longest_prefix_wins_and_others_take_the_default() {
        let r = router();
        assert_eq!(r.lane("+390212345678", None, None), 0x0000);
        assert_eq!(r.lane("+393471234567", None, None), 0x0100);
        assert_eq!(r.lane("+4915123456789", None, None), 0x0200);
        // The step of the channel that tried it last.
        assert_eq!(r.lane("+390212345678", Some("carrier"), None), 0x0001);
        assert_eq!(r.lane("+390212345678", Some("modem2"), None), 0x0000);
        assert_eq!(r.lanes(), vec![0x0000, 0x0001, 0x0100, 0x0101, 0x0200]);
    }

    #[test]
    fn a_lane_is_served_by_the_first_step_with_a_channel_up() {
        let r = router();
        let all_up = |_: &str| true;
        assert_eq!(r.lanes_for("modem1", all_up), vec![0x0000, 0x0101]);
        assert_eq!(r.lanes_for("modem2", all_up), vec![0x0000]);
        assert_eq!(r.lanes_for("carrier", all_up), vec![0x0001, 0x0100, 0x0200]);
        // Both modems down: the carrier takes Italy's fixed lines too.
        let modems_down = |c: &str| c == "carrier";
        assert_eq!(
            r.lanes_for("carrier", modems_down),
            vec![0x0000, 0x0001, 0x0100, 0x0200]
        );
        // One modem down: the other still serves the step.
        let modem1_down = |c: &str| c != "modem1";
        assert_eq!(r.lanes_for("modem2", modem1_down), vec![0x0000]);
        assert_eq!(
            r.lanes_for("carrier", modem1_down),
            vec![0x0001, 0x0100, 0x0200]
        );
        // The carrier down: mobiles go to modem1.
        let carrier_down = |c: &str| c != "carrier";
        assert_eq!(
            r.lanes_for("modem1", carrier_down),
            vec![0x0000, 0x0100, 0x0101]
        );
        // A channel that is down takes nothing.
        assert!(r.lanes_for("modem1", modem1_down).is_empty());
    }

    #[test]
    fn a_refusal_hands_the_message_to_the_next_step() {
        let r = router();
        assert_eq!(r.failover("+390212345678", "modem2", None), Some("carrier"));
        assert_eq!(r.failover("+390212345678", "carrier", None), None);
        assert_eq!(r.failover("+393471234567", "carrier", None), Some("modem1"));
        assert_eq!(r.failover("+4915123456789", "carrier", None), None);
        // Its lane then is the next step's.
        assert_eq!(r.lane("+393471234567", Some("modem1"), None), 0x0101);
    }

    #[test]
    fn without_routes_every_channel_takes_every_message() {
        let r = Router::new(&[], &["a".into(), "b".into()]);
        // Lane 0, and one pinned lane per channel.
        assert_eq!(r.lanes(), vec![0, 0x80, 0x81]);
        assert_eq!(r.lane("+391", Some("b"), None), 0);
        assert_eq!(r.lanes_for("b", |_| true), vec![0, 0x81]);
        assert_eq!(r.failover("+391", "a", None), None);
        assert!(r.is_trivial());
        let d = Router::default();
        assert_eq!(d.lanes_for("x", |_| true), vec![0]);
        assert!(d.lanes_for("x", |_| false).is_empty());
        assert_ne!(r.fingerprint(), router().fingerprint());
    }

    #[test]
    fn a_pinned_message_waits_for_its_channel_and_the_route_serves_it_when_that_is_down() {
        let channels = ["carrier".to_string(), "modem1".into(), "modem2".into()];
        let routes = [
            RouteSettings {
                prefixes: vec!["+39".into()],
                channels: vec![
                    RouteStep::Shared(vec!["modem1".into(), "modem2".into()]),
                    one("carrier"),
                ],
            },
            RouteSettings {
                prefixes: Vec::new(),
                channels: vec![one("carrier")],
            },
        ];
        let r = Router::new(&routes, &channels);
        let italy = "+393471234567";
        // Pinned to modem2 (index 2): its pinned lane on the Italian route, until another
        // channel tried it.
        assert_eq!(r.lane(italy, None, Some("modem2")), 0x0082);
        assert_eq!(r.lane(italy, Some("modem2"), Some("modem2")), 0x0082);
        assert_eq!(r.lane(italy, Some("carrier"), Some("modem2")), 0x0001);
        // A channel no longer configured: the route's lanes.
        assert_eq!(r.lane(italy, None, Some("gone")), 0x0000);
        let all_up = |_: &str| true;
        assert!(r.lanes_for("modem2", all_up).contains(&0x0082));
        assert!(!r.lanes_for("modem1", all_up).contains(&0x0082));
        assert!(!r.lanes_for("carrier", all_up).contains(&0x0082));
        // modem2 down: the first step's other channel takes its pinned messages, not the
        // carrier (the route's later step).
        let modem2_down = |c: &str| c != "modem2";
        assert!(r.lanes_for("modem1", modem2_down).contains(&0x0082));
        assert!(!r.lanes_for("carrier", modem2_down).contains(&0x0082));
        // Both modems down: the carrier serves lane 0, and so the pinned lane.
        let modems_down = |c: &str| c == "carrier";
        assert!(r.lanes_for("carrier", modems_down).contains(&0x0082));
        // Refused for good by the channel it is pinned to: the route from its first step
        // without that channel; refused there, the route goes on as usual.
        assert_eq!(
            r.failover(italy, "carrier", Some("carrier")),
            Some("modem1")
        );
        assert_eq!(r.lane(italy, Some("modem1"), Some("carrier")), 0x0000);
        assert_eq!(r.failover(italy, "modem1", Some("modem1")), Some("carrier"));
        assert_eq!(
            r.failover("+4915123456789", "modem1", Some("modem1")),
            Some("carrier")
        );
        assert_ne!(
            r.fingerprint(),
            Router::new(&routes, &["modem1".into(), "carrier".into()]).fingerprint(),
            "pinned lanes are numbered by channel: a new order refiles the queue"
        );
    }

    fn account(name: &str, numbers: &[&str], keywords: &[&str], catch_all: bool) -> ReplyAccount {
        ReplyAccount {
            target: format!("smpp:{name}"),
            account: name.into(),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            catch_all,
        }
    }

    #[test]
    fn replies_go_by_keyword_then_conversation_then_number_then_catch_all() {
        let rules = ReplyRules {
            accounts: vec![
                account("shopA", &["+3900111"], &["Info", "ORDINE"], false),
                account("shopB", &["3900222"], &["promo"], false),
                account("desk", &[], &[], true),
            ],
            conversation_window_ms: 60_000,
        };
        let target = |to: &str, text: &str, conv: Option<&str>| {
            rules.target_for(to, text, conv).map(|a| a.account.as_str())
        };
        // Keyword beats conversation and number; case and surrounding spaces do not matter.
        assert_eq!(
            target("+3900222", "  info please", Some("shopB")),
            Some("shopA")
        );
        assert_eq!(target("+3900111", "PROMO\nyes", None), Some("shopB"));
        // Only the first word is a keyword.
        assert_eq!(target("+3900999", "please info", None), Some("desk"));
        // Conversation beats number.
        assert_eq!(target("+3900111", "yes", Some("shopB")), Some("shopB"));
        // An account not in the rules is no conversation for them.
        assert_eq!(target("+3900111", "yes", Some("gone")), Some("shopA"));
        // Numbers compare with or without '+'.
        assert_eq!(target("3900111", "yes", None), Some("shopA"));
        assert_eq!(target("+3900222", "yes", None), Some("shopB"));
        assert_eq!(target("+3900999", "", None), Some("desk"));
        let no_catch_all = ReplyRules {
            accounts: rules.accounts[..2].to_vec(),
            conversation_window_ms: 0,
        };
        assert!(no_catch_all.target_for("+3900999", "hi", None).is_none());
        assert!(
            ReplyRules::default()
                .target_for("+3900111", "info", None)
                .is_none()
        );
    }

    #[test]
    fn bad_routes_are_reported_with_their_key() {
        let routes = vec![
            RouteSettings {
                prefixes: vec!["39".into(), "+39".into()],
                channels: vec![one("nope"), one("a"), one("a")],
            },
            RouteSettings {
                prefixes: vec!["+39".into()],
                channels: Vec::new(),
            },
            RouteSettings::default(),
            RouteSettings::default(),
        ];
        let problems = check(&routes, &["a", "b"]);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "route",
            "route.0.prefixes.0",
            "route.0.channels.0",
            "route.0.channels.2",
            "route.1.prefixes.0",
            "route.1.channels",
        ] {
            assert!(keys.contains(&key), "{key} not in {problems:?}");
        }
        assert!(check(&[], &[]).is_empty());
    }
}
