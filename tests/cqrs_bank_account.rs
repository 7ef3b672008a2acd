//! cqrs-es's bank-account example on annal (feature `cqrs-es`): the
//! aggregate, commands, events, services and query of the `cqrs-demo`
//! repository (serverlesstechnology/cqrs-demo, Apache-2.0/MIT), written for
//! cqrs-es 0.5; scenarios ported from its aggregate tests, run through a
//! `CqrsFramework` whose events live in an annal log, in the three store
//! modes, then the query rebuilt from the log after a reopen.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use annal::Log;
use annal::cqrs::{AnnalCqrs, AnnalEventRepository, annal_aggregate_cqrs, annal_cqrs, annal_snapshot_cqrs};
use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::QueryReplay;
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope, Query};
use serde::{Deserialize, Serialize};

// ---- the domain (cqrs-demo's src/domain) -----------------------------------

#[derive(Debug, Default, Serialize, Deserialize)]
struct BankAccount {
    opened: bool,
    balance: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum BankAccountCommand {
    OpenAccount { account_id: String },
    DepositMoney { amount: f64 },
    WithdrawMoney { amount: f64, atm_id: String },
    WriteCheck { check_number: String, amount: f64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum BankAccountEvent {
    AccountOpened {
        account_id: String,
    },
    CustomerDepositedMoney {
        amount: f64,
        balance: f64,
    },
    CustomerWithdrewCash {
        amount: f64,
        balance: f64,
    },
    CustomerWroteCheck {
        check_number: String,
        amount: f64,
        balance: f64,
    },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            BankAccountEvent::AccountOpened { .. } => "AccountOpened",
            BankAccountEvent::CustomerDepositedMoney { .. } => "CustomerDepositedMoney",
            BankAccountEvent::CustomerWithdrewCash { .. } => "CustomerWithdrewCash",
            BankAccountEvent::CustomerWroteCheck { .. } => "CustomerWroteCheck",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
struct BankAccountError(String);

impl From<&str> for BankAccountError {
    fn from(message: &str) -> Self {
        BankAccountError(message.to_string())
    }
}

/// The external services a command needs (cqrs-demo's
/// `BankAccountServices`): ATMs and a check clearing house. Here, a set of
/// ATMs that refuse and a set of check numbers that bounce.
#[derive(Default)]
struct BankAccountServices {
    broken_atms: HashSet<String>,
    bad_checks: HashSet<String>,
}

impl BankAccountServices {
    async fn atm_withdrawal(&self, atm_id: &str, _amount: f64) -> Result<(), BankAccountError> {
        match self.broken_atms.contains(atm_id) {
            true => Err("atm rule violation".into()),
            false => Ok(()),
        }
    }
    async fn validate_check(&self, _account: &str, check_number: &str) -> Result<(), BankAccountError> {
        match self.bad_checks.contains(check_number) {
            true => Err("check invalid".into()),
            false => Ok(()),
        }
    }
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankAccountError;
    type Services = BankAccountServices;

    async fn handle(
        &mut self,
        command: BankAccountCommand,
        services: &BankAccountServices,
        sink: &EventSink<Self>,
    ) -> Result<(), BankAccountError> {
        match command {
            BankAccountCommand::OpenAccount { .. } if self.opened => return Err("account already open".into()),
            BankAccountCommand::OpenAccount { account_id } => {
                sink.write(BankAccountEvent::AccountOpened { account_id }, self).await;
            }
            BankAccountCommand::DepositMoney { amount } => {
                let balance = self.balance + amount;
                sink.write(BankAccountEvent::CustomerDepositedMoney { amount, balance }, self)
                    .await;
            }
            BankAccountCommand::WithdrawMoney { amount, atm_id } => {
                let balance = self.balance - amount;
                if balance < 0_f64 {
                    return Err("funds not available".into());
                }
                services.atm_withdrawal(&atm_id, amount).await?;
                sink.write(BankAccountEvent::CustomerWithdrewCash { amount, balance }, self)
                    .await;
            }
            BankAccountCommand::WriteCheck { check_number, amount } => {
                let balance = self.balance - amount;
                if balance < 0_f64 {
                    return Err("funds not available".into());
                }
                services.validate_check("", &check_number).await?;
                sink.write(
                    BankAccountEvent::CustomerWroteCheck {
                        check_number,
                        amount,
                        balance,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: BankAccountEvent) {
        match event {
            BankAccountEvent::AccountOpened { .. } => self.opened = true,
            BankAccountEvent::CustomerDepositedMoney { balance, .. }
            | BankAccountEvent::CustomerWithdrewCash { balance, .. }
            | BankAccountEvent::CustomerWroteCheck { balance, .. } => self.balance = balance,
        }
    }
}

// ---- the query (cqrs-demo's src/queries.rs) ----------------------------------

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct BankAccountView {
    account_id: Option<String>,
    balance: f64,
    written_checks: Vec<String>,
    ledger: Vec<(String, f64)>,
    last_sequence: usize,
}

impl BankAccountView {
    fn update(&mut self, event: &EventEnvelope<BankAccount>) {
        assert_eq!(event.sequence, self.last_sequence + 1, "each event once, in order");
        self.last_sequence = event.sequence;
        match &event.payload {
            BankAccountEvent::AccountOpened { account_id } => self.account_id = Some(account_id.clone()),
            BankAccountEvent::CustomerDepositedMoney { amount, balance } => {
                self.ledger.push(("deposit".into(), *amount));
                self.balance = *balance;
            }
            BankAccountEvent::CustomerWithdrewCash { amount, balance } => {
                self.ledger.push(("atm withdrawal".into(), *amount));
                self.balance = *balance;
            }
            BankAccountEvent::CustomerWroteCheck {
                check_number,
                amount,
                balance,
            } => {
                self.ledger.push((check_number.clone(), *amount));
                self.written_checks.push(check_number.clone());
                self.balance = *balance;
            }
        }
    }
}

/// Views kept in memory (cqrs-demo keeps them in a database through
/// `GenericQuery`).
#[derive(Clone, Default)]
struct AccountQuery(Arc<Mutex<HashMap<String, BankAccountView>>>);

#[async_trait]
impl Query<BankAccount> for AccountQuery {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<BankAccount>]) {
        let mut views = self.0.lock().unwrap();
        let view = views.entry(aggregate_id.to_string()).or_default();
        for e in events {
            view.update(e);
        }
    }
}

impl AccountQuery {
    fn get(&self, id: &str) -> BankAccountView {
        self.0.lock().unwrap().get(id).cloned().unwrap_or_default()
    }
}

// ---- scenarios -------------------------------------------------------------

fn services() -> BankAccountServices {
    BankAccountServices {
        broken_atms: HashSet::from(["atm-broken".to_string()]),
        bad_checks: HashSet::from(["bounce".to_string()]),
    }
}

type Build = fn(Log, Vec<Box<dyn Query<BankAccount>>>, BankAccountServices) -> AnnalCqrs<BankAccount>;

const MODES: [(&str, Build); 3] = [
    ("event store", |log, q, s| annal_cqrs(log, q, s)),
    ("snapshot store", |log, q, s| annal_snapshot_cqrs(log, q, 2, s)),
    ("aggregate store", |log, q, s| annal_aggregate_cqrs(log, q, s)),
];

fn user_error(e: AggregateError<BankAccountError>) -> String {
    match e {
        AggregateError::UserError(e) => e.0,
        other => panic!("expected a user error, got {other:?}"),
    }
}

/// cqrs-demo's aggregate tests (deposit, deposit with a balance, withdraw,
/// funds not available, wrote check, check funds not available), and the
/// services' refusals, in each store mode.
#[tokio::test]
async fn bank_account_scenarios_in_every_store_mode() {
    for (mode, build) in MODES {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let query = AccountQuery::default();
        let cqrs = build(log.clone(), vec![Box::new(query.clone())], services());
        let id = "ACCT-7";
        cqrs.execute(id, BankAccountCommand::OpenAccount { account_id: id.into() })
            .await
            .unwrap();
        let again = cqrs
            .execute(id, BankAccountCommand::OpenAccount { account_id: id.into() })
            .await;
        assert_eq!(user_error(again.unwrap_err()), "account already open", "{mode}");

        cqrs.execute(id, BankAccountCommand::DepositMoney { amount: 200.0 })
            .await
            .unwrap();
        assert_eq!(query.get(id).balance, 200.0, "{mode}: deposit");
        cqrs.execute(id, BankAccountCommand::DepositMoney { amount: 200.0 })
            .await
            .unwrap();
        assert_eq!(query.get(id).balance, 400.0, "{mode}: deposit with balance");
        cqrs.execute(
            id,
            BankAccountCommand::WithdrawMoney {
                amount: 100.0,
                atm_id: "atm-1".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(query.get(id).balance, 300.0, "{mode}: withdraw");

        let before = log.next_position();
        let broke = cqrs
            .execute(
                id,
                BankAccountCommand::WithdrawMoney {
                    amount: 500.0,
                    atm_id: "atm-1".into(),
                },
            )
            .await;
        assert_eq!(user_error(broke.unwrap_err()), "funds not available", "{mode}");
        let atm = cqrs
            .execute(
                id,
                BankAccountCommand::WithdrawMoney {
                    amount: 10.0,
                    atm_id: "atm-broken".into(),
                },
            )
            .await;
        assert_eq!(user_error(atm.unwrap_err()), "atm rule violation", "{mode}");
        let check = cqrs
            .execute(
                id,
                BankAccountCommand::WriteCheck {
                    check_number: "1170".into(),
                    amount: 1000.0,
                },
            )
            .await;
        assert_eq!(user_error(check.unwrap_err()), "funds not available", "{mode}");
        let bounce = cqrs
            .execute(
                id,
                BankAccountCommand::WriteCheck {
                    check_number: "bounce".into(),
                    amount: 1.0,
                },
            )
            .await;
        assert_eq!(user_error(bounce.unwrap_err()), "check invalid", "{mode}");
        assert_eq!(log.next_position(), before, "{mode}: a refused command appends nothing");

        cqrs.execute(
            id,
            BankAccountCommand::WriteCheck {
                check_number: "1170".into(),
                amount: 100.0,
            },
        )
        .await
        .unwrap();
        let view = query.get(id);
        assert_eq!(view.balance, 200.0, "{mode}: wrote check");
        assert_eq!(view.written_checks, ["1170"], "{mode}");
        assert_eq!(view.last_sequence, 5, "{mode}");
        assert_eq!(
            log.stream_version("account-ACCT-7").unwrap(),
            Some(4),
            "{mode}: sequence 5 is version 4"
        );
    }
}

/// Several accounts, then a reopen: the log holds everything the query saw,
/// and replaying the `account` category rebuilds the same views; commands go
/// on from the reopened log.
#[tokio::test]
async fn the_query_is_rebuilt_from_the_log_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let live = AccountQuery::default();
    {
        let log = annal::Options::default()
            .durability(annal::Durability::Fsync)
            .open(dir.path())
            .unwrap();
        let cqrs = annal_snapshot_cqrs::<BankAccount>(log, vec![Box::new(live.clone())], 3, services());
        for n in 0..4 {
            let id = format!("acct-{n}");
            cqrs.execute(&id, BankAccountCommand::OpenAccount { account_id: id.clone() })
                .await
                .unwrap();
            for d in 0..=n {
                cqrs.execute(
                    &id,
                    BankAccountCommand::DepositMoney {
                        amount: 10.0 * f64::from(d + 1),
                    },
                )
                .await
                .unwrap();
            }
            cqrs.execute(
                &id,
                BankAccountCommand::WriteCheck {
                    check_number: format!("c{n}"),
                    amount: 5.0,
                },
            )
            .await
            .unwrap();
        }
    }
    let log = Log::open(dir.path()).unwrap();
    let rebuilt = AccountQuery::default();
    QueryReplay::new(AnnalEventRepository::new(log.clone()), rebuilt.clone())
        .replay_all()
        .await
        .unwrap();
    assert_eq!(*rebuilt.0.lock().unwrap(), *live.0.lock().unwrap());
    assert_eq!(rebuilt.get("acct-3").balance, 10.0 + 20.0 + 30.0 + 40.0 - 5.0);

    let one = AccountQuery::default();
    QueryReplay::new(AnnalEventRepository::new(log.clone()), one.clone())
        .replay("acct-2")
        .await
        .unwrap();
    assert_eq!(one.get("acct-2"), live.get("acct-2"));
    assert_eq!(one.0.lock().unwrap().len(), 1);

    let cqrs = annal_snapshot_cqrs::<BankAccount>(log.clone(), vec![Box::new(rebuilt.clone())], 3, services());
    cqrs.execute(
        "acct-1",
        BankAccountCommand::WithdrawMoney {
            amount: 25.0,
            atm_id: "atm-1".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(rebuilt.get("acct-1").balance, 10.0 + 20.0 - 5.0 - 25.0);
}
