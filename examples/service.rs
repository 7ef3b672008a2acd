//! An HTTP service on annal (axum): commands to an account aggregate, a read
//! model kept live by a subscription, and a server-sent-events endpoint that
//! streams a category.
//!
//! Run: `cargo run --example service --features tokio,json -- [DIR] [ADDR]`
//! (defaults: a new temporary folder, `127.0.0.1:3000`), then:
//!
//! ```text
//! curl -N localhost:3000/events/account &          # every account event, live
//! curl -XPOST localhost:3000/accounts/7 -H 'content-type: application/json' \
//!      -d '{"type":"Open","owner":"Ada"}'          # {"stream_version":0,"position":0}
//! curl -XPOST localhost:3000/accounts/7 -H 'content-type: application/json' \
//!      -d '{"type":"Deposit","cents":500}'
//! curl -XPOST localhost:3000/accounts/7 -H 'content-type: application/json' \
//!      -H 'if-match: "1"' -d '{"type":"Withdraw","cents":200}'
//! curl 'localhost:3000/accounts/7?at_least=2'      # the read model, once it has position 2
//! ```
//!
//! - `POST /accounts/{id}` runs a command through [`Repository::execute_async`]
//!   (the append waits for its group commit without blocking a worker;
//!   concurrent commands to one account are retried on conflicts, up to 64
//!   attempts, `409` after that). With an
//!   `If-Match: "V"` header the command runs only if the account is at version
//!   `V`, without retry: `412` otherwise. A refused command is `422`; every
//!   answer carries the account's version as its `ETag`.
//! - `GET /accounts/{id}` answers from a read model that a subscription to the
//!   category `account` keeps live. `?at_least=P` waits (up to 5 s) until the
//!   model has applied position `P`, so a client reads its own writes.
//! - `GET /events/{category}` streams the category as server-sent events (id:
//!   the position, event: the type, data: the JSON payload), resuming after
//!   `Last-Event-ID` (or from `?from=P`).
//! - Ctrl-C (or the `shutdown` future of [`serve`]) ends the event streams,
//!   lets the server drain, stops the read model and closes the log cleanly.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use annal::typed::Codec;
use annal::{Aggregate, Durability, Event, ExecuteError, ExpectedVersion, Log, Options, OwnedRecord, Repository};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The events of an account, stored as JSON (so `annal read --json` and the
/// event stream show them as they are).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

impl Event for AccountEvent {
    const CODEC: Codec = Codec::Json;
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// What a client asks of an account.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum Command {
    Open { owner: String },
    Deposit { cents: u64 },
    Withdraw { cents: u64 },
}

/// The aggregate: what commands are checked against.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    open: bool,
    balance: u64,
}

impl Aggregate for Account {
    type Event = AccountEvent;
    type Command = Command;
    type Error = String;

    fn handle(&self, command: &Command) -> Result<Vec<AccountEvent>, String> {
        match command {
            Command::Open { .. } if self.open => Err("the account is already open".into()),
            Command::Open { owner } => Ok(vec![AccountEvent::Opened { owner: owner.clone() }]),
            _ if !self.open => Err("no such account: open it first".into()),
            Command::Deposit { cents: 0 } | Command::Withdraw { cents: 0 } => Err("the amount must not be 0".into()),
            Command::Deposit { cents } => Ok(vec![AccountEvent::Deposited { cents: *cents }]),
            Command::Withdraw { cents } if *cents > self.balance => {
                Err(format!("insufficient funds: {} cents, {cents} asked", self.balance))
            }
            Command::Withdraw { cents } => Ok(vec![AccountEvent::Withdrawn { cents: *cents }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => self.open = true,
            AccountEvent::Deposited { cents } => self.balance += cents,
            AccountEvent::Withdrawn { cents } => self.balance -= cents,
        }
    }
}

/// One account as the read model shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub owner: String,
    pub balance_cents: u64,
    /// The version of the account's last event.
    pub version: u64,
    /// The position of the account's last event.
    pub position: u64,
}

/// The read model: every account, folded from the category `account` by a
/// subscription, and how far it got.
#[derive(Debug, Default)]
struct ReadModel {
    accounts: HashMap<String, AccountView>,
}

impl ReadModel {
    fn apply(&mut self, record: &OwnedRecord) -> annal::Result<()> {
        let Some(id) = record.stream.strip_prefix("account-") else {
            return Ok(());
        };
        let view = || AccountView {
            owner: String::new(),
            balance_cents: 0,
            version: 0,
            position: 0,
        };
        let account = self.accounts.entry(id.to_owned()).or_insert_with(view);
        match record.decode::<AccountEvent>()? {
            AccountEvent::Opened { owner } => account.owner = owner,
            AccountEvent::Deposited { cents } => account.balance_cents += cents,
            AccountEvent::Withdrawn { cents } => account.balance_cents = account.balance_cents.saturating_sub(cents),
        }
        account.version = record.stream_version;
        account.position = record.position;
        Ok(())
    }
}

/// What every handler shares (cheap clones: the log and repository are
/// handles).
#[derive(Clone)]
struct App {
    log: Log,
    accounts: Repository<Account>,
    model: Arc<RwLock<ReadModel>>,
    /// The last position the read model applied.
    applied: watch::Receiver<Option<u64>>,
    /// Becomes `true` when the service shuts down: event streams end.
    stopping: watch::Receiver<bool>,
}

/// Completes once `stopping` turns `true` (or its sender is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serve the service on `listener` until `shutdown` completes, then close
/// `log` cleanly (every clone of it is closed).
pub async fn serve(
    listener: TcpListener,
    log: Log,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let (stop, stopping) = watch::channel(false);
    let (applied_tx, applied) = watch::channel(None);
    let model = Arc::new(RwLock::new(ReadModel::default()));

    // The read model: the category from its start, then live.
    let events = log
        .subscribe_category("account", 0)
        .into_stream()
        .take_until(stopped(stopping.clone()));
    let fold = Arc::clone(&model);
    let read_model = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(record) = events.next().await {
            let record = record?;
            fold.write()
                .map_err(|_| "the read model's lock is poisoned")?
                .apply(&record)?;
            applied_tx.send_replace(Some(record.position));
        }
        Ok::<(), BoxError>(())
    });

    let app = App {
        log: log.clone(),
        // An attempt of a command fails only when another command to the
        // same account succeeded meanwhile, so N concurrent commands to one
        // account need at most N attempts each.
        accounts: Repository::new(&log).max_attempts(64),
        model,
        applied,
        stopping,
    };
    let router = Router::new()
        .route("/accounts/{id}", get(account).post(command))
        .route("/events/{category}", get(events_of))
        .with_state(app);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Event streams end now, so that the server can drain.
            stop.send_replace(true);
        })
        .await;

    let folded = read_model.await;
    // Durable, marked cleanly closed, the writer lock released; the fsync
    // is blocking work.
    let closed = tokio::task::spawn_blocking(move || log.close()).await;
    served?;
    folded??;
    closed??;
    Ok(())
}

/// An error answer: a status and `{"error": ...}`.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": message.to_string() }))).into_response()
}

/// The `If-Match` header as a stream version (`"3"` or `3`), if any.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim().trim_matches('"');
    text.parse()
        .map(Some)
        .map_err(|_| "If-Match must be a version, e.g. \"3\"")
}

/// `200 {"stream_version", "position"}` with the version as `ETag`.
fn appended(r: annal::AppendResult) -> Response {
    let body = serde_json::json!({ "stream_version": r.stream_version, "position": r.last_position });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", r.stream_version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// `POST /accounts/{id}`: a command.
async fn command(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(cmd): Json<Command>,
) -> Response {
    let stream = format!("account-{id}");
    let expected = match if_match(&headers) {
        Ok(e) => e,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Some(expected) = expected else {
        // No condition: load, decide, append, retried on conflicts.
        return match app.accounts.execute_async(&stream, &cmd).await {
            Ok(done) => match done.appended {
                Some(r) => appended(r),
                None => error(StatusCode::UNPROCESSABLE_ENTITY, "the command changed nothing"),
            },
            Err(ExecuteError::Rejected(why)) => error(StatusCode::UNPROCESSABLE_ENTITY, why),
            Err(e @ ExecuteError::Conflict { .. }) => error(StatusCode::CONFLICT, e),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
    };
    // `If-Match`: decide on the state at that version and append only if
    // the account is still there (no retry: the client decided on it).
    let loaded = match app.accounts.load(&stream) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    if loaded.version != Some(expected) {
        let now = loaded.version.map_or("none".to_owned(), |v| v.to_string());
        return error(
            StatusCode::PRECONDITION_FAILED,
            format!("the account is at version {now}, not {expected}"),
        );
    }
    let events = match loaded.state.handle(&cmd) {
        Ok(events) => events,
        Err(why) => return error(StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    match app
        .log
        .append_typed_async(&stream, ExpectedVersion::Exact(expected), &events)
        .await
    {
        Ok(r) => appended(r),
        Err(annal::Error::WrongExpectedVersion { .. }) => error(
            StatusCode::PRECONDITION_FAILED,
            format!("the account moved past version {expected}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize)]
struct AtLeast {
    at_least: Option<u64>,
}

/// `GET /accounts/{id}[?at_least=P]`: the read model's view.
async fn account(State(mut app): State<App>, Path(id): Path<String>, Query(q): Query<AtLeast>) -> Response {
    if let Some(p) = q.at_least {
        let caught_up = app.applied.wait_for(|a| a.is_some_and(|a| a >= p));
        match tokio::time::timeout(Duration::from_secs(5), caught_up).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, "the read model has stopped"),
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("position {p} not applied after 5 s"),
                );
            }
        }
    }
    let view = match app.model.read() {
        Ok(model) => model.accounts.get(&id).cloned(),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the read model's lock is poisoned"),
    };
    match view {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no account {id}")),
    }
}

#[derive(Deserialize)]
struct Since {
    from: Option<u64>,
}

/// `GET /events/{category}`: server-sent events from `Last-Event-ID` + 1,
/// `?from=P` or the start; they end when the service stops.
async fn events_of(
    State(app): State<App>,
    Path(category): Path<String>,
    Query(q): Query<Since>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<sse::Event, Infallible>>> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|p| p + 1);
    let from = resume.or(q.from).unwrap_or(0);
    let events = app
        .log
        .subscribe_category(&category, from)
        .into_stream()
        .take_until(stopped(app.stopping.clone()))
        .map(|record| {
            Ok(match record {
                Ok(r) => sse::Event::default()
                    .id(r.position.to_string())
                    .event(&r.event_type)
                    .data(String::from_utf8_lossy(&r.payload)),
                // The subscription ends after an error; say why.
                Err(e) => sse::Event::default().event("error").data(e.to_string()),
            })
        });
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let temporary;
    let dir = match args.next() {
        Some(d) => PathBuf::from(d),
        None => {
            temporary = tempfile::Builder::new().prefix("annal-service-").tempdir()?;
            temporary.path().to_owned()
        }
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let log = Options::default().durability(Durability::Fsync).open(&dir)?;
    let listener = TcpListener::bind(&addr).await?;
    println!(
        "annal service on http://{} (log in {})",
        listener.local_addr()?,
        dir.display()
    );
    serve(listener, log, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    println!("stopped; the log is closed cleanly");
    Ok(())
}
