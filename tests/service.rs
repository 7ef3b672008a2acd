//! The example service (`examples/service.rs`, axum) driven over HTTP on
//! loopback: commands (refused, conditional, concurrent, conflicting), the
//! read model reading its own writes, server-sent events that see every
//! event of the category exactly once (also across a reconnect with
//! `Last-Event-ID`), and a shutdown that ends the event streams and leaves
//! the log cleanly closed.

#[path = "../examples/service.rs"]
#[allow(dead_code, reason = "the example's `main` is not called by the test")]
mod service;

use std::future::Future;
use std::time::Duration;

use annal::{Durability, EventData, ExpectedVersion, Log, Options, Reader};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A guard against a hang (never a speed limit): a step that does not end
/// in this time fails the test with `what`.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within 60 s"))
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    id: u64,
    event: String,
    data: String,
}

/// Read server-sent events from `response` until `limit` were read or the
/// stream ends (text/event-stream: blocks of `field: value` lines, a blank
/// line after each; `:` lines are comments, the keep-alives).
async fn read_events(response: reqwest::Response, limit: usize) -> Vec<Sent> {
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < limit {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut sent = Sent {
                id: u64::MAX,
                event: String::new(),
                data: String::new(),
            };
            let mut fields = 0;
            for line in block.lines().filter(|l| !l.is_empty() && !l.starts_with(':')) {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                fields += 1;
                match field {
                    "id" => sent.id = value.parse().expect("an id is a position"),
                    "event" => sent.event = value.to_owned(),
                    "data" => sent.data.push_str(value),
                    other => panic!("unexpected field {other:?} in {block:?}"),
                }
            }
            if fields > 0 {
                out.push(sent);
            }
            if out.len() == limit {
                return out;
            }
        }
        match body.next().await {
            Some(chunk) => text.push_str(std::str::from_utf8(&chunk.expect("the event stream")).unwrap()),
            None => break,
        }
    }
    assert!(text.trim().is_empty(), "a partial event at the end: {text:?}");
    out
}

struct Client {
    http: reqwest::Client,
    base: String,
}

/// An answer: status, JSON body, `ETag`.
type Answer = (u16, Value, Option<String>);

impl Client {
    async fn command(&self, account: &str, body: Value, if_match: Option<&str>) -> Answer {
        let mut request = self.http.post(format!("{}/accounts/{account}", self.base)).json(&body);
        if let Some(v) = if_match {
            request = request.header("if-match", v);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        (status, response.json().await.expect("a JSON answer"), etag)
    }

    async fn account(&self, account: &str, at_least: Option<u64>) -> (u16, Value) {
        let query = at_least.map(|p| format!("?at_least={p}")).unwrap_or_default();
        let response = self
            .http
            .get(format!("{}/accounts/{account}{query}", self.base))
            .send()
            .await
            .expect("GET");
        (
            response.status().as_u16(),
            response.json().await.expect("a JSON answer"),
        )
    }

    async fn events(&self, category: &str, last_event_id: Option<u64>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}/events/{category}", self.base));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        request.send().await.expect("GET events")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_over_http_commands_read_model_events_and_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let log = Options::default()
        .durability(Durability::Fsync)
        .open(dir.path())
        .unwrap();
    // The test's own handle: an event of another category, which the
    // category's readers must never see.
    let outsider = log.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, shut) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service::serve(listener, log, async {
        let _ = shut.await;
    }));
    let client = Client {
        http: reqwest::Client::new(),
        base,
    };

    // A watcher from the start (it catches up, then follows live), and one
    // that leaves after 3 events and comes back with `Last-Event-ID`.
    let watcher = tokio::spawn(read_events(client.events("account", None).await, usize::MAX));
    let early = client.events("account", None).await;

    // Commands, refused and accepted.
    let (status, body, etag) = client.command("1", json!({"type": "Open", "owner": "Ada"}), None).await;
    assert_eq!(
        (status, &body, etag.as_deref()),
        (200, &json!({"stream_version": 0, "position": 0}), Some("\"0\""))
    );
    let (status, body, _) = client.command("1", json!({"type": "Open", "owner": "Eve"}), None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "the account is already open");
    let (status, _, _) = client.command("2", json!({"type": "Deposit", "cents": 5}), None).await;
    assert_eq!(status, 422, "a deposit to an account never opened");
    outsider
        .append("audit-1", ExpectedVersion::Any, &[EventData::new("Noted", b"{}")])
        .unwrap();
    let (status, body, _) = client
        .command("1", json!({"type": "Deposit", "cents": 500}), None)
        .await;
    assert_eq!((status, body["stream_version"].as_u64()), (200, Some(1)), "{body}");
    // Conditional: at the version the client saw, then at a stale one.
    let (status, body, etag) = client
        .command("1", json!({"type": "Withdraw", "cents": 200}), Some("\"1\""))
        .await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"2\"")), "{body}");
    let (status, body, _) = client
        .command("1", json!({"type": "Withdraw", "cents": 100}), Some("\"1\""))
        .await;
    assert_eq!(status, 412, "{body}");
    let (status, _, _) = client
        .command("1", json!({"type": "Withdraw", "cents": 10_000}), None)
        .await;
    assert_eq!(status, 422, "more than the balance");
    let (status, _, _) = client
        .command("1", json!({"type": "Withdraw", "cents": 1}), Some("two"))
        .await;
    assert_eq!(status, 400, "an If-Match that is no version");
    let (status, _, _) = client.command("2", json!({"type": "Open", "owner": "Bob"}), None).await;
    assert_eq!(status, 200);

    // 16 concurrent deposits to one account: each is retried past the
    // others' appends until it lands, so all succeed with distinct versions.
    let deposits = (0..16).map(|_| client.command("1", json!({"type": "Deposit", "cents": 10}), None));
    let mut versions: Vec<u64> = futures::future::join_all(deposits)
        .await
        .into_iter()
        .map(|(status, body, _)| {
            assert_eq!(status, 200, "{body}");
            body["stream_version"].as_u64().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (3..19).collect::<Vec<_>>());
    // 8 concurrent withdrawals all made at version 18: exactly one wins.
    let conflicting = (0..8).map(|_| client.command("1", json!({"type": "Withdraw", "cents": 1}), Some("\"18\"")));
    let answers = futures::future::join_all(conflicting).await;
    let won: Vec<&Answer> = answers.iter().filter(|a| a.0 == 200).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|a| a.0 == 200 || a.0 == 412), "{answers:?}");
    let last = won[0].1["position"].as_u64().unwrap();

    // The read model reads the client's own writes.
    let (status, view) = client.account("1", Some(last)).await;
    assert_eq!(status, 200);
    assert_eq!(
        view,
        json!({"owner": "Ada", "balance_cents": 500 - 200 + 160 - 1, "version": 19, "position": last})
    );
    let (status, view) = client.account("2", None).await;
    assert_eq!((status, &view["owner"]), (200, &json!("Bob")));
    assert_eq!(client.account("99", None).await.0, 404);

    // The early watcher: 3 events, then back with the id of the third.
    let first = within("the first 3 events", read_events(early, 3)).await;
    let resumed = tokio::spawn(read_events(
        client.events("account", Some(first[2].id)).await,
        usize::MAX,
    ));

    // Shutdown: the streams end, the server drains, the log closes.
    shutdown.send(()).unwrap();
    within("the server's shutdown", server).await.unwrap().expect("serve");
    let seen = within("the watcher", watcher).await.unwrap();
    let rest = within("the resumed watcher", resumed).await.unwrap();
    assert!(
        outsider
            .append("audit-1", ExpectedVersion::Any, &[EventData::new("Late", b"{}")])
            .is_err(),
        "closing the service closes every clone of the log"
    );
    drop(outsider);

    // Closed cleanly: a reader with no writer sees nothing unrecovered, and
    // the events streamed are the category's, each once, in order.
    let view = Reader::open(dir.path()).unwrap().view().unwrap();
    assert!(view.unrecovered().is_none(), "{:?}", view.unrecovered());
    let expected: Vec<Sent> = view
        .read_category("account", 0)
        .map(|r| {
            let r = r.unwrap();
            Sent {
                id: r.position(),
                event: r.event_type().to_owned(),
                data: String::from_utf8(r.payload().to_vec()).unwrap(),
            }
        })
        .collect();
    assert_eq!(
        expected.len(),
        1 + 1 + 1 + 1 + 16 + 1,
        "opens, deposits and withdrawals"
    );
    assert_eq!(seen, expected, "the watcher saw every event once, in order");
    assert_eq!(
        [first, rest].concat(),
        expected,
        "a reconnect resumes after Last-Event-ID"
    );
    assert!(expected.iter().all(|s| serde_json::from_str::<Value>(&s.data).is_ok()));
    drop(view);

    // The writer lock was released and nothing needed recovery.
    let reopened = Log::open(dir.path()).unwrap();
    assert!(reopened.recovery().truncated.is_none());
    assert_eq!(reopened.view().unwrap().next_position(), expected.len() as u64 + 1);
    reopened.close().unwrap();
}
