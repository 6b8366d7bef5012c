//! Configuration reload (SIGHUP) end to end: the real `parla` binary with two `parla sim smsc`
//! carriers. A reload adds a link, a route and an API token while the unchanged link keeps its
//! connection; a broken configuration is refused and changes nothing; removing a link unbinds
//! it.

mod support;

use serde_json::{Value, json};
use support::{Binary, Client, Listening, start_sim_smsc, wait_delivered, write_config};

const TOKEN: &str = "reload-token-0123456789";

fn link(name: &str, smsc: &Listening) -> String {
    format!(
        "[[smpp.client]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\n\
         system_id = \"{name}\"\npassword = \"secret\"\nreconnect_min = \"100ms\"\n\
         reconnect_max = \"300ms\"\n",
        smsc.port
    )
}

fn base() -> String {
    "[store]\npath = \"store\"\n[retry]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n"
        .to_string()
}

fn channels(client: &Client) -> Vec<(String, String)> {
    let answer = client.get("/v1/channels");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn wait_channels(client: &Client, want: &[(&str, &str)]) {
    let start = std::time::Instant::now();
    loop {
        let now = channels(client);
        let now_ref: Vec<(&str, &str)> =
            now.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        if now_ref == want {
            return;
        }
        assert!(
            start.elapsed() < support::GUARD,
            "channels {now:?}, want {want:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn binds(smsc: &Listening) -> usize {
    smsc.events("bound").len()
}

#[test]
fn a_reload_adds_and_removes_links_keeps_the_unchanged_one_and_refuses_a_broken_file() {
    let carrier_a = start_sim_smsc(&[]);
    let carrier_b = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &(base() + &link("carrier-a", &carrier_a)));
    let parla = Binary::start(dir.path(), Some(&config), &[]);
    let open = parla.client.clone();
    wait_channels(&open, &[("carrier-a", "up")]);
    carrier_a.wait_event("bound", |_| true);
    let a_binds = binds(&carrier_a);

    // Add carrier B with a route of its own for Germany, and an API token.
    write_config(
        dir.path(),
        &format!(
            "{}[http]\ntokens = [\"{TOKEN}\"]\n{}{}\
             [[route]]\nprefixes = [\"+49\"]\nchannels = [\"carrier-b\"]\n\
             [[route]]\nchannels = [\"carrier-a\"]\n",
            base(),
            link("carrier-a", &carrier_a),
            link("carrier-b", &carrier_b),
        ),
    );
    parla.hangup();
    parla.wait_log("configuration reloaded", 1);
    let authed = open.clone().with_token(TOKEN);
    assert_eq!(
        open.get("/v1/channels").status,
        401,
        "the token is required now"
    );
    wait_channels(&authed, &[("carrier-a", "up"), ("carrier-b", "up")]);
    carrier_b.wait_event("bound", |_| true);
    assert_eq!(
        binds(&carrier_a),
        a_binds,
        "the unchanged link kept its session: {}",
        carrier_a.all_events()
    );
    assert!(carrier_a.events("unbound").is_empty() && carrier_a.events("disconnected").is_empty());
    // The new route is in force: Germany goes to B, Italy to A.
    let send = |to: &str| -> Value {
        let a = authed.post("/v1/messages", &json!({"to": to, "text": "reload"}));
        assert_eq!(a.status, 202, "{:?}", a.body);
        wait_delivered(&authed, a.body["id"].as_str().unwrap())
    };
    assert_eq!(send("+4915123456789")["channel"], "carrier-b");
    assert_eq!(send("+393471234567")["channel"], "carrier-a");

    // A broken file is refused whole: same channels, same token.
    write_config(dir.path(), "[http\nlisten = ");
    parla.hangup();
    parla.wait_log("the running configuration stays in force", 1);
    wait_channels(&authed, &[("carrier-a", "up"), ("carrier-b", "up")]);
    assert_eq!(open.get("/v1/channels").status, 401);
    // So is a file that parses but has a bad value.
    write_config(
        dir.path(),
        &(base() + &link("carrier-a", &carrier_a) + "[conversations]\nreply_window = \"0s\"\n"),
    );
    parla.hangup();
    parla.wait_log("the running configuration stays in force", 2);
    assert!(parla.log().contains("conversations.reply_window"));
    assert_eq!(binds(&carrier_a), a_binds);

    // Carrier A goes: it unbinds; carrier B and the token stay; no token is needed any more
    // once the file has none.
    write_config(
        dir.path(),
        &format!(
            "{}[http]\ntokens = [\"{TOKEN}\"]\n{}",
            base(),
            link("carrier-b", &carrier_b)
        ),
    );
    parla.hangup();
    parla.wait_log("configuration reloaded", 2);
    wait_channels(&authed, &[("carrier-b", "up")]);
    carrier_a.wait_event("unbound", |_| true);
    assert_eq!(send("+393471234567")["channel"], "carrier-b");
    assert!(
        parla.log().contains("channel removed by the reload"),
        "{}",
        parla.log()
    );
}
