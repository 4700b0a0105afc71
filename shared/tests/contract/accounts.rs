//! Behaviour every `AccountStore` adapter must show (SQLite, PostgreSQL):
//! users and their notification targets, alert rules scoped to their
//! owner, rule evaluation saved by compare-and-set with the alert it fired,
//! deliveries, and portfolios whose orders are atomic and exact.
//! Each check uses e-mail addresses, symbols and chat ids of its own, so the
//! suite can share one real database.
//!
//! Times are whole microseconds: the precision both SQL stores keep.

use chrono::{DateTime, Duration, Utc};
use lizards_shared::{
    Symbol,
    accounts::{
        AccountError, AccountStore, Alert, Channel, Delivery, DeliveryStatus, Email, NewAlert, NewUser, Order,
        OrderError, OrderRequest, Portfolio, Position, Rule, RuleId, RuleKind, RuleSpec, RuleState, Side, StateSave,
        SymbolRefs, Targets, User, UserId, UserPatch,
    },
    jwt::Role,
    store::SqliteStore,
};
use rust_decimal::Decimal;

use crate::helpers::unique;

pub async fn run_all(store: &dyn AccountStore) {
    created_user_reads_back_by_id_and_email(store).await;
    update_user_changes_only_the_given_fields(store).await;
    duplicate_email_is_refused_on_create_and_update(store).await;
    token_version_moves_when_password_email_or_role_change(store).await;
    deleting_a_user_deletes_everything_of_theirs(store).await;
    users_are_listed_oldest_first(store).await;
    has_admin_once_an_admin_exists(store).await;
    users_are_counted_by_role(store).await;
    telegram_link_code_links_the_chat_once(store).await;
    notification_slot_respects_the_minimum_interval(store).await;
    rules_are_scoped_to_their_owner(store).await;
    updating_a_rule_replaces_spec_and_state_and_bumps_the_version(store).await;
    rules_for_quote_include_portfolio_rules_of_holders_only(store).await;
    save_evaluation_stores_state_and_alert_with_pending_deliveries(store).await;
    stale_evaluation_conflicts_and_writes_nothing(store).await;
    save_states_writes_current_rules_and_names_the_moved_on(store).await;
    concurrent_evaluations_of_one_version_save_once(store).await;
    deleting_a_rule_keeps_its_alerts(store).await;
    alerts_are_listed_newest_first_within_limit(store).await;
    deliveries_are_upserted_per_channel(store).await;
    unpublished_alerts_are_oldest_first_until_marked_published(store).await;
    portfolio_without_deposit_is_empty_and_deposits_add_up(store).await;
    buying_and_selling_move_cash_positions_and_realised_pnl_exactly(store).await;
    refused_orders_change_nothing(store).await;
    concurrent_orders_never_spend_more_than_the_cash(store).await;
    decimals_round_trip_exactly(store).await;
    sql_metacharacters_are_stored_verbatim(store).await;
    symbol_refcounts_count_rules_and_open_positions(store).await;
}

/// A symbol no other check (or run) uses: `A` and 12 hex digits.
fn unique_symbol() -> Symbol {
    let hex = uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase();
    Symbol::parse(&format!("A{}", &hex[..12])).expect("a valid symbol")
}

fn unique_email(prefix: &str) -> Email {
    Email::parse(&format!("{}@example.com", unique(prefix))).expect("a valid address")
}

/// A Telegram chat id no other check (or run) uses.
fn unique_chat() -> i64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64
}

/// A fixed origin, so runs are reproducible.
fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-09-14T12:00:00.000001Z").expect("valid time").to_utc()
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

fn d(text: &str) -> Decimal {
    text.parse().expect("a decimal")
}

fn new_user(email: Email) -> NewUser {
    NewUser {
        email,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".to_string(),
        role: Role::User,
        targets: Targets::default(),
        min_notification_interval: 0,
    }
}

async fn create_user(store: &dyn AccountStore) -> User {
    store.create_user(&new_user(unique_email("user"))).await.expect("user is created")
}

async fn user(store: &dyn AccountStore, user: &User) -> Option<User> {
    store.user(user.id).await.expect("user answers")
}

fn spec(symbol: Option<&Symbol>, kind: RuleKind, threshold: f64) -> RuleSpec {
    RuleSpec {
        symbol: symbol.cloned(),
        kind,
        threshold,
        window_minutes: None,
        cooldown: 900,
        channels: vec![Channel::Email, Channel::Ws],
    }
}

async fn create_rule(store: &dyn AccountStore, user: &User, spec: &RuleSpec) -> Rule {
    store.create_rule(user.id, spec, &RuleState::default()).await.expect("rule is created")
}

async fn rule(store: &dyn AccountStore, user: &User, rule: &Rule) -> Option<Rule> {
    store.rule(user.id, rule.id).await.expect("rule answers")
}

fn new_alert(rule: &Rule, fired_at: DateTime<Utc>, channels: &[Channel]) -> NewAlert {
    NewAlert {
        user_id: rule.user_id,
        rule_id: rule.id,
        symbol: rule.spec.symbol.clone(),
        kind: rule.spec.kind,
        threshold: rule.spec.threshold,
        price: Some(101.25),
        change_pct: None,
        message: format!(
            "{} rose above {}",
            rule.spec.symbol.as_ref().map_or("-", Symbol::as_str),
            rule.spec.threshold
        ),
        fired_at,
        channels: channels.to_vec(),
    }
}

/// The state an evaluation saves when the rule fires at `fired_at`.
fn firing_state(fired_at: DateTime<Utc>) -> RuleState {
    RuleState {
        active: Some(true),
        baseline: Some(101.25),
        observed_at: Some(fired_at),
        last_fired_at: Some(fired_at),
        version: 0,
    }
}

/// Fires `rule` (at its current version) and returns the stored alert.
async fn fire(store: &dyn AccountStore, rule: &Rule, fired_at: DateTime<Utc>) -> Alert {
    let version = store.rule(rule.user_id, rule.id).await.expect("rule answers").expect("rule exists").state.version;
    let alert = new_alert(rule, fired_at, &rule.spec.channels);
    let saved = store.save_evaluation(rule.id, version, &firing_state(fired_at), Some(&alert)).await;
    saved.expect("evaluation is saved").expect("an alert is stored")
}

async fn alert(store: &dyn AccountStore, alert: &Alert) -> Option<Alert> {
    store.alert(alert.id).await.expect("alert answers")
}

fn pending(channels: &[Channel], at: DateTime<Utc>) -> Vec<Delivery> {
    channels
        .iter()
        .map(|&channel| Delivery { channel, status: DeliveryStatus::Pending, attempts: 0, at, error: None })
        .collect()
}

fn order(symbol: &Symbol, side: Side, quantity: &str, price: &str) -> OrderRequest {
    OrderRequest { symbol: symbol.clone(), side, quantity: d(quantity), price: d(price) }
}

async fn place(store: &dyn AccountStore, user: &User, order: &OrderRequest) -> (Order, Portfolio) {
    store.place_order(user.id, order, at(0)).await.expect("order is executed")
}

async fn portfolio(store: &dyn AccountStore, user: &User) -> Portfolio {
    store.portfolio(user.id).await.expect("portfolio answers")
}

async fn deposit(store: &dyn AccountStore, user: &User, amount: &str) -> Portfolio {
    store.deposit(user.id, d(amount)).await.expect("deposit is made")
}

async fn orders(store: &dyn AccountStore, user: &User) -> Vec<Order> {
    store.orders_of(user.id, 100).await.expect("orders answer")
}

fn position(symbol: &Symbol, quantity: &str, avg_cost: &str) -> Position {
    Position { symbol: symbol.clone(), quantity: d(quantity), avg_cost: d(avg_cost) }
}

pub async fn created_user_reads_back_by_id_and_email(store: &dyn AccountStore) {
    let email = unique_email("ann");
    let chat = unique_chat();
    let new = NewUser {
        targets: Targets {
            email: true,
            webhook_url: Some("https://hooks.example.com/ann".to_string()),
            webhook_secret: Some("s3cret".to_string()),
            telegram_chat_id: Some(chat),
        },
        min_notification_interval: 300,
        ..new_user(email.clone())
    };
    let created = store.create_user(&new).await.expect("user is created");
    assert_eq!(created.email, email);
    assert_eq!(created.password_hash, new.password_hash);
    assert_eq!(created.role, Role::User);
    assert_eq!(created.targets, new.targets);
    assert_eq!(created.min_notification_interval, 300);
    assert_eq!(created.telegram_link_code, None);
    assert!((Utc::now() - created.created_at).abs() < Duration::minutes(1), "created now: {}", created.created_at);

    assert_eq!(user(store, &created).await, Some(created.clone()));
    assert_eq!(store.user_by_email(&email).await.expect("user_by_email answers"), Some(created.clone()));
    assert_eq!(store.user_by_telegram_chat(chat).await.expect("user_by_telegram_chat answers"), Some(created));
    assert_eq!(store.user_by_email(&unique_email("nobody")).await.expect("user_by_email answers"), None);
    assert_eq!(store.user(UserId(i64::MAX)).await.expect("user answers"), None);
}

pub async fn update_user_changes_only_the_given_fields(store: &dyn AccountStore) {
    let new = NewUser {
        targets: Targets {
            email: false,
            webhook_url: Some("https://hooks.example.com/a".to_string()),
            webhook_secret: Some("secret".to_string()),
            telegram_chat_id: Some(unique_chat()),
        },
        ..new_user(unique_email("bob"))
    };
    let created = store.create_user(&new).await.expect("user is created");

    let unchanged = store.update_user(created.id, &UserPatch::default()).await.expect("update answers");
    assert_eq!(unchanged, Some(created.clone()), "an empty patch changes nothing");

    let email = unique_email("robert");
    let patch = UserPatch {
        email: Some(email.clone()),
        role: Some(Role::Admin),
        email_notifications: Some(true),
        webhook_url: Some(None),
        min_notification_interval: Some(60),
        telegram_link_code: Some(Some(unique("code"))),
        ..UserPatch::default()
    };
    let updated = store.update_user(created.id, &patch).await.expect("update answers").expect("user exists");
    let expected = User {
        email,
        role: Role::Admin,
        targets: Targets { email: true, webhook_url: None, ..created.targets.clone() },
        min_notification_interval: 60,
        telegram_link_code: patch.telegram_link_code.clone().flatten(),
        token_version: created.token_version + 1,
        ..created.clone()
    };
    assert_eq!(updated, expected, "Some(None) clears, None keeps");
    assert_eq!(user(store, &created).await, Some(expected.clone()));

    let cleared = UserPatch {
        password_hash: Some("new hash".to_string()),
        webhook_secret: Some(None),
        telegram_chat_id: Some(None),
        telegram_link_code: Some(None),
        ..UserPatch::default()
    };
    let updated = store.update_user(created.id, &cleared).await.expect("update answers").expect("user exists");
    assert_eq!(updated.password_hash, "new hash");
    assert_eq!(updated.targets, Targets { email: true, ..Targets::default() });
    assert_eq!(updated.telegram_link_code, None);

    let unknown = UserId(i64::MAX);
    assert_eq!(store.update_user(unknown, &patch).await.expect("update answers"), None, "an unknown user");
}

pub async fn token_version_moves_when_password_email_or_role_change(store: &dyn AccountStore) {
    let ann = create_user(store).await;
    assert_eq!(ann.token_version, 0, "a new account starts at version 0");
    let version = |patch: UserPatch| async move {
        store.update_user(ann.id, &patch).await.expect("update answers").expect("user exists").token_version
    };
    let quiet = UserPatch { min_notification_interval: Some(30), webhook_url: Some(None), ..UserPatch::default() };
    assert_eq!(version(quiet).await, 0, "notification settings revoke nothing");
    let same = UserPatch { email: Some(ann.email.clone()), role: Some(ann.role), ..UserPatch::default() };
    assert_eq!(version(same).await, 0, "setting the values it already has revokes nothing");
    let password = UserPatch { password_hash: Some("another hash".into()), ..UserPatch::default() };
    assert_eq!(version(password).await, 1, "a password change");
    let email = UserPatch { email: Some(unique_email("ann.new")), ..UserPatch::default() };
    assert_eq!(version(email).await, 2, "an e-mail change");
    let role = UserPatch { role: Some(Role::Admin), min_notification_interval: Some(0), ..UserPatch::default() };
    assert_eq!(version(role).await, 3, "a role change, with another field");
}

pub async fn duplicate_email_is_refused_on_create_and_update(store: &dyn AccountStore) {
    let ann = create_user(store).await;
    let again = store.create_user(&new_user(ann.email.clone())).await;
    assert!(matches!(again, Err(AccountError::EmailTaken)), "create with a taken address: {again:?}");

    let bob = create_user(store).await;
    let taken = UserPatch { email: Some(ann.email.clone()), ..UserPatch::default() };
    let update = store.update_user(bob.id, &taken).await;
    assert!(matches!(update, Err(AccountError::EmailTaken)), "update to a taken address: {update:?}");
    assert_eq!(user(store, &bob).await, Some(bob.clone()), "the refused update changed nothing");

    let own = UserPatch { email: Some(bob.email.clone()), ..UserPatch::default() };
    assert_eq!(store.update_user(bob.id, &own).await.expect("own address"), Some(bob), "keeping one's own address");
}

pub async fn deleting_a_user_deletes_everything_of_theirs(store: &dyn AccountStore) {
    let symbol = unique_symbol();
    let (gone, kept) = (create_user(store).await, create_user(store).await);
    let mut alerts = Vec::new();
    for user in [&gone, &kept] {
        let rule = create_rule(store, user, &spec(Some(&symbol), RuleKind::Above, 100.0)).await;
        alerts.push(fire(store, &rule, at(1)).await);
        deposit(store, user, "1000").await;
        place(store, user, &order(&symbol, Side::Buy, "2", "10")).await;
    }

    assert!(store.delete_user(gone.id).await.expect("delete answers"));
    assert_eq!(user(store, &gone).await, None);
    assert!(store.rules_of(gone.id).await.expect("rules answer").is_empty(), "rules deleted");
    assert!(store.alerts_of(gone.id, 100).await.expect("alerts answer").is_empty(), "alerts deleted");
    assert_eq!(alert(store, &alerts[0]).await, None, "alert and deliveries deleted");
    assert_eq!(portfolio(store, &gone).await, Portfolio::default(), "portfolio and positions deleted");
    assert!(orders(store, &gone).await.is_empty(), "orders deleted");
    assert!(!store.delete_user(gone.id).await.expect("delete answers"), "deleting again finds nothing");

    assert_eq!(user(store, &kept).await, Some(kept.clone()), "another user is untouched");
    assert_eq!(store.rules_of(kept.id).await.expect("rules answer").len(), 1);
    assert_eq!(alert(store, &alerts[1]).await, Some(alerts[1].clone()));
    assert_eq!(portfolio(store, &kept).await.positions, [position(&symbol, "2", "10")]);
    assert_eq!(orders(store, &kept).await.len(), 1);
    let refs = store.symbol_refcounts().await.expect("refcounts answer");
    let mine: Vec<&SymbolRefs> = refs.iter().filter(|r| r.symbol == symbol).collect();
    assert_eq!(mine, [&SymbolRefs { symbol: symbol.clone(), rules: 1, positions: 1 }], "only the kept user's");
}

pub async fn users_are_listed_oldest_first(store: &dyn AccountStore) {
    let mine = [create_user(store).await, create_user(store).await, create_user(store).await];
    let all = store.users().await.expect("users answer");
    let listed: Vec<&User> = all.iter().filter(|u| mine.iter().any(|m| m.id == u.id)).collect();
    assert_eq!(listed, mine.iter().collect::<Vec<_>>());
}

pub async fn has_admin_once_an_admin_exists(store: &dyn AccountStore) {
    let admin = NewUser { role: Role::Admin, ..new_user(unique_email("admin")) };
    let admin = store.create_user(&admin).await.expect("admin is created");
    assert_eq!(admin.role, Role::Admin);
    assert!(store.has_admin().await.expect("has_admin answers"));
}

pub async fn users_are_counted_by_role(store: &dyn AccountStore) {
    let of = |counts: &[(Role, u64)], role: Role| counts.iter().find(|(r, _)| *r == role).map_or(0, |(_, n)| *n);
    let before = store.users_by_role().await.expect("counts answer");
    create_user(store).await;
    create_user(store).await;
    store.create_user(&NewUser { role: Role::Admin, ..new_user(unique_email("admin")) }).await.expect("admin");
    let after = store.users_by_role().await.expect("counts answer");
    // Other suites may add users to a shared database meanwhile: at least.
    assert!(of(&after, Role::User) >= of(&before, Role::User) + 2, "{before:?} -> {after:?}");
    assert!(of(&after, Role::Admin) > of(&before, Role::Admin), "{before:?} -> {after:?}");
    assert!(after.iter().all(|(_, n)| *n > 0), "roles nobody holds are left out: {after:?}");
}

pub async fn telegram_link_code_links_the_chat_once(store: &dyn AccountStore) {
    let ann = create_user(store).await;
    let code = unique("link");
    let with_code = UserPatch { telegram_link_code: Some(Some(code.clone())), ..UserPatch::default() };
    store.update_user(ann.id, &with_code).await.expect("update answers").expect("user exists");

    let chat = unique_chat();
    let linked = store.link_telegram(&code, chat).await.expect("link answers").expect("the code is known");
    assert_eq!(linked.id, ann.id);
    assert_eq!(linked.targets.telegram_chat_id, Some(chat));
    assert_eq!(linked.telegram_link_code, None, "the code is used up");
    assert_eq!(user(store, &ann).await, Some(linked.clone()));
    assert_eq!(store.user_by_telegram_chat(chat).await.expect("lookup answers"), Some(linked));

    let replay = store.link_telegram(&code, unique_chat()).await.expect("link answers");
    assert_eq!(replay, None, "a code links once");
    assert_eq!(user(store, &ann).await.and_then(|u| u.targets.telegram_chat_id), Some(chat));
    assert_eq!(store.link_telegram(&unique("unknown"), unique_chat()).await.expect("link answers"), None);
    assert_eq!(store.user_by_telegram_chat(unique_chat()).await.expect("lookup answers"), None);

    // The chat's owner links it to another account: it moves.
    let bob = create_user(store).await;
    let code = unique("link");
    let with_code = UserPatch { telegram_link_code: Some(Some(code.clone())), ..UserPatch::default() };
    store.update_user(bob.id, &with_code).await.expect("update answers").expect("user exists");
    let moved = store.link_telegram(&code, chat).await.expect("link answers").expect("the code is known");
    assert_eq!((moved.id, moved.targets.telegram_chat_id), (bob.id, Some(chat)));
    assert_eq!(user(store, &ann).await.and_then(|u| u.targets.telegram_chat_id), None, "one account per chat");
    assert_eq!(store.user_by_telegram_chat(chat).await.expect("lookup answers").map(|u| u.id), Some(bob.id));
}

pub async fn notification_slot_respects_the_minimum_interval(store: &dyn AccountStore) {
    let minute = NewUser { min_notification_interval: 60, ..new_user(unique_email("slow")) };
    let minute = store.create_user(&minute).await.expect("user is created");
    let claim =
        |id, seconds| async move { store.claim_notification_slot(id, at(seconds)).await.expect("claim answers") };
    assert!(claim(minute.id, 0).await, "the first notification");
    assert!(!claim(minute.id, 0).await, "at once again");
    assert!(!claim(minute.id, 59).await, "59 s later");
    assert!(claim(minute.id, 60).await, "a minute later");
    assert!(!claim(minute.id, 30).await, "before the last one");

    let eager = create_user(store).await;
    assert!(claim(eager.id, 0).await && claim(eager.id, 0).await, "no interval: every notification");
    assert!(!claim(UserId(i64::MAX), 0).await, "an unknown user");

    let racing = NewUser { min_notification_interval: 60, ..new_user(unique_email("racing")) };
    let racing = store.create_user(&racing).await.expect("user is created");
    let claims = futures::future::join_all((0..8).map(|_| claim(racing.id, 0))).await;
    assert_eq!(claims.iter().filter(|&&claimed| claimed).count(), 1, "one of concurrent claims wins: {claims:?}");
}

pub async fn rules_are_scoped_to_their_owner(store: &dyn AccountStore) {
    let symbol = unique_symbol();
    let (owner, other) = (create_user(store).await, create_user(store).await);
    let state = RuleState { version: 7, ..firing_state(at(0)) };
    let above = spec(Some(&symbol), RuleKind::Above, 100.5);
    let created = store.create_rule(owner.id, &above, &state).await.expect("rule is created");
    assert_eq!(created.user_id, owner.id);
    assert_eq!(created.spec, above);
    assert_eq!(created.state, RuleState { version: 0, ..state }, "stored at version 0");
    let portfolio_rule = RuleSpec {
        window_minutes: Some(30),
        cooldown: 0,
        channels: vec![Channel::Telegram],
        ..spec(None, RuleKind::PortfolioChangePct, -5.0)
    };
    let second = create_rule(store, &owner, &portfolio_rule).await;
    assert_eq!(second.spec, portfolio_rule);

    assert_eq!(rule(store, &owner, &created).await, Some(created.clone()));
    assert_eq!(rule(store, &other, &created).await, None, "another user's rule is not found");
    let changed = spec(Some(&symbol), RuleKind::Below, 1.0);
    let update = store.update_rule(other.id, created.id, &changed, &RuleState::default()).await;
    assert_eq!(update.expect("update answers"), None, "nor can they change it");
    assert!(!store.delete_rule(other.id, created.id).await.expect("delete answers"), "nor delete it");
    assert_eq!(rule(store, &owner, &created).await, Some(created.clone()), "still unchanged");

    assert_eq!(store.rules_of(owner.id).await.expect("rules answer"), [created.clone(), second.clone()]);
    assert!(store.rules_of(other.id).await.expect("rules answer").is_empty());
    let all = store.all_rules().await.expect("all rules answer");
    let listed: Vec<&Rule> = all.iter().filter(|r| r.user_id == owner.id).collect();
    assert_eq!(listed, [&created, &second], "all rules, oldest first");

    assert!(store.delete_rule(owner.id, created.id).await.expect("delete answers"));
    assert_eq!(rule(store, &owner, &created).await, None);
    assert!(!store.delete_rule(owner.id, created.id).await.expect("delete answers"), "deleting again");
    assert_eq!(store.rules_of(owner.id).await.expect("rules answer"), [second]);
}

pub async fn updating_a_rule_replaces_spec_and_state_and_bumps_the_version(store: &dyn AccountStore) {
    let owner = create_user(store).await;
    let created = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;
    fire(store, &created, at(1)).await;
    assert_eq!(rule(store, &owner, &created).await.expect("rule exists").state.version, 1);

    let changed = RuleSpec {
        window_minutes: Some(15),
        channels: vec![Channel::Webhook, Channel::Ws],
        ..spec(Some(&unique_symbol()), RuleKind::ChangePct, -2.5)
    };
    let fresh = RuleState { baseline: Some(99.0), version: 42, ..RuleState::default() };
    let updated = store.update_rule(owner.id, created.id, &changed, &fresh).await.expect("update answers");
    let expected = Rule { spec: changed, state: RuleState { version: 2, ..fresh }, ..created.clone() };
    assert_eq!(updated, Some(expected.clone()), "spec and state replaced, version bumped");
    assert_eq!(rule(store, &owner, &created).await, Some(expected));

    let stale = store.save_evaluation(created.id, 1, &firing_state(at(2)), None).await;
    assert!(matches!(stale, Err(AccountError::Conflict)), "an evaluation of the old rule conflicts: {stale:?}");
}

pub async fn rules_for_quote_include_portfolio_rules_of_holders_only(store: &dyn AccountStore) {
    let (symbol, elsewhere) = (unique_symbol(), unique_symbol());
    let watcher = create_user(store).await;
    let above = create_rule(store, &watcher, &spec(Some(&symbol), RuleKind::Above, 10.0)).await;
    let change = create_rule(store, &watcher, &spec(Some(&symbol), RuleKind::ChangePct, 3.0)).await;
    create_rule(store, &watcher, &spec(Some(&elsewhere), RuleKind::Below, 10.0)).await;
    create_rule(store, &watcher, &spec(None, RuleKind::PortfolioChangePct, 5.0)).await;

    let holder = create_user(store).await;
    deposit(store, &holder, "100").await;
    place(store, &holder, &order(&symbol, Side::Buy, "1", "10")).await;
    let held = create_rule(store, &holder, &spec(None, RuleKind::PortfolioChangePct, -5.0)).await;

    let sold_out = create_user(store).await;
    deposit(store, &sold_out, "100").await;
    place(store, &sold_out, &order(&symbol, Side::Buy, "1", "10")).await;
    place(store, &sold_out, &order(&symbol, Side::Sell, "1", "10")).await;
    create_rule(store, &sold_out, &spec(None, RuleKind::PortfolioChangePct, 5.0)).await;

    let other_holder = create_user(store).await;
    deposit(store, &other_holder, "100").await;
    place(store, &other_holder, &order(&elsewhere, Side::Buy, "1", "10")).await;
    create_rule(store, &other_holder, &spec(None, RuleKind::PortfolioChangePct, 5.0)).await;

    let rules = store.rules_for_quote(&symbol).await.expect("rules answer");
    assert_eq!(rules, [above, change, held], "the symbol's rules and its holders' portfolio rules, oldest first");
    assert!(store.rules_for_quote(&unique_symbol()).await.expect("rules answer").is_empty());
}

pub async fn save_evaluation_stores_state_and_alert_with_pending_deliveries(store: &dyn AccountStore) {
    let owner = create_user(store).await;
    let created = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;

    let quiet = RuleState { active: Some(false), observed_at: Some(at(1)), version: 99, ..RuleState::default() };
    let saved = store.save_evaluation(created.id, 0, &quiet, None).await.expect("evaluation is saved");
    assert_eq!(saved, None, "no alert, none stored");
    let stored = rule(store, &owner, &created).await.expect("rule exists");
    assert_eq!(stored.state, RuleState { version: 1, ..quiet }, "the passed version is ignored");

    // Channels in any order, even twice: one delivery each, in channel order.
    let new = new_alert(&created, at(2), &[Channel::Ws, Channel::Email, Channel::Ws, Channel::Telegram]);
    let state = firing_state(at(2));
    let stored_alert = store.save_evaluation(created.id, 1, &state, Some(&new)).await.expect("evaluation is saved");
    let stored_alert = stored_alert.expect("the alert is stored");
    let expected = Alert {
        id: stored_alert.id,
        user_id: owner.id,
        rule_id: Some(created.id),
        symbol: new.symbol.clone(),
        kind: RuleKind::Above,
        threshold: 100.0,
        price: Some(101.25),
        change_pct: None,
        message: new.message.clone(),
        fired_at: at(2),
        deliveries: pending(&[Channel::Email, Channel::Telegram, Channel::Ws], at(2)),
        published: false,
    };
    assert_eq!(stored_alert, expected);
    assert_eq!(alert(store, &expected).await, Some(expected.clone()), "reads back the same");
    assert_eq!(store.alerts_of(owner.id, 10).await.expect("alerts answer"), [expected]);
    assert_eq!(rule(store, &owner, &created).await.expect("rule exists").state, RuleState { version: 2, ..state });
}

pub async fn stale_evaluation_conflicts_and_writes_nothing(store: &dyn AccountStore) {
    let owner = create_user(store).await;
    let created = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;
    let first = fire(store, &created, at(1)).await;
    let before = rule(store, &owner, &created).await.expect("rule exists");

    let late = new_alert(&created, at(2), &[Channel::Email]);
    let stale = store.save_evaluation(created.id, 0, &firing_state(at(2)), Some(&late)).await;
    assert!(matches!(stale, Err(AccountError::Conflict)), "version 0 is stale: {stale:?}");
    assert_eq!(rule(store, &owner, &created).await, Some(before), "state unchanged");
    assert_eq!(store.alerts_of(owner.id, 10).await.expect("alerts answer"), [first], "no second alert");

    let unknown = store.save_evaluation(RuleId(i64::MAX), 0, &RuleState::default(), None).await;
    assert!(matches!(unknown, Err(AccountError::Conflict)), "a deleted rule conflicts too");
}

pub async fn save_states_writes_current_rules_and_names_the_moved_on(store: &dyn AccountStore) {
    let owner = create_user(store).await;
    let current = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;
    let moved = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Below, 100.0)).await;
    fire(store, &moved, at(1)).await;
    let moved_before = rule(store, &owner, &moved).await.expect("rule exists");

    let state = RuleState { active: Some(true), baseline: Some(5.5), observed_at: Some(at(2)), ..RuleState::default() };
    let saves = [current.id, moved.id].map(|id| StateSave {
        rule: id,
        expected_version: current.state.version,
        state: state.clone(),
    });
    let moved_on = store.save_states(&saves).await.expect("save_states answers");
    assert_eq!(moved_on, [moved.id]);
    let saved = rule(store, &owner, &current).await.expect("rule exists");
    assert_eq!(
        (saved.state.active, saved.state.baseline, saved.state.observed_at, saved.state.version),
        (Some(true), Some(5.5), Some(at(2)), current.state.version + 1)
    );
    assert_eq!(rule(store, &owner, &moved).await, Some(moved_before), "nothing written over a newer version");
    assert_eq!(store.save_states(&[]).await.expect("an empty batch answers"), []);
}

pub async fn concurrent_evaluations_of_one_version_save_once(store: &dyn AccountStore) {
    let owner = create_user(store).await;
    let created = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;
    let alerts: Vec<NewAlert> = (0..6).map(|i| new_alert(&created, at(i), &[Channel::Ws])).collect();
    let state = firing_state(at(0));
    let saves = alerts.iter().map(|alert| store.save_evaluation(created.id, 0, &state, Some(alert)));
    let results = futures::future::join_all(saves).await;
    let saved = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results.iter().filter(|r| matches!(r, Err(AccountError::Conflict))).count();
    assert_eq!((saved, conflicts), (1, 5), "one evaluator wins, the others conflict: {results:?}");
    assert_eq!(store.alerts_of(owner.id, 10).await.expect("alerts answer").len(), 1, "one alert");
    assert_eq!(rule(store, &owner, &created).await.expect("rule exists").state.version, 1);
}

pub async fn deleting_a_rule_keeps_its_alerts(store: &dyn AccountStore) {
    let owner = create_user(store).await;
    let created = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Below, 10.0)).await;
    let fired = fire(store, &created, at(1)).await;
    assert!(store.delete_rule(owner.id, created.id).await.expect("delete answers"));
    assert_eq!(alert(store, &fired).await, Some(Alert { rule_id: None, ..fired }), "kept without its rule");
}

pub async fn alerts_are_listed_newest_first_within_limit(store: &dyn AccountStore) {
    let (owner, other) = (create_user(store).await, create_user(store).await);
    let created = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;
    let mut fired = Vec::new();
    for second in 1..=3 {
        fired.push(fire(store, &created, at(second)).await);
    }
    let others = create_rule(store, &other, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;
    let theirs = fire(store, &others, at(4)).await;
    fired.reverse();

    assert_eq!(store.alerts_of(owner.id, 10).await.expect("alerts answer"), fired, "newest first, own only");
    assert_eq!(store.alerts_of(owner.id, 2).await.expect("alerts answer"), fired[..2], "the newest within the limit");
    assert_eq!(store.alerts_of(other.id, 10).await.expect("alerts answer"), std::slice::from_ref(&theirs));

    let all = store.all_alerts(1000).await.expect("all alerts answer");
    let listed: Vec<&Alert> = all.iter().filter(|a| a.user_id == owner.id || a.user_id == other.id).collect();
    assert_eq!(listed, [&theirs, &fired[0], &fired[1], &fired[2]], "every user's, newest first");
    assert_eq!(store.all_alerts(1).await.expect("all alerts answer").len(), 1);
}

pub async fn deliveries_are_upserted_per_channel(store: &dyn AccountStore) {
    let owner = create_user(store).await;
    let created = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;
    let fired = fire(store, &created, at(1)).await;
    assert_eq!(fired.deliveries, pending(&[Channel::Email, Channel::Ws], at(1)));

    let sent = Delivery { channel: Channel::Email, status: DeliveryStatus::Sent, attempts: 2, at: at(5), error: None };
    let failed = Delivery {
        channel: Channel::Webhook,
        status: DeliveryStatus::Failed,
        attempts: 5,
        at: at(9),
        error: Some("HTTP 500 from 'https://hooks.example.com'".to_string()),
    };
    let suppressed =
        Delivery { channel: Channel::Ws, status: DeliveryStatus::Suppressed, attempts: 0, at: at(1), error: None };
    for delivery in [&sent, &failed, &suppressed] {
        store.set_delivery(fired.id, delivery).await.expect("delivery is recorded");
    }
    let stored = alert(store, &fired).await.expect("alert exists");
    assert_eq!(stored.deliveries, [sent.clone(), failed, suppressed], "updated, added, in channel order");

    let retried = Delivery { status: DeliveryStatus::Pending, attempts: 3, error: Some("timeout".into()), ..sent };
    store.set_delivery(fired.id, &retried).await.expect("delivery is recorded");
    assert_eq!(alert(store, &fired).await.expect("alert exists").deliveries[0], retried, "the same row again");
}

pub async fn unpublished_alerts_are_oldest_first_until_marked_published(store: &dyn AccountStore) {
    // A firing time of its own, long before the other checks' alerts, so
    // that `before` selects (almost) only this check's alerts in a shared
    // database.
    let start = DateTime::parse_from_rfc3339("1990-01-01T00:00:00Z").expect("valid time").to_utc()
        + Duration::seconds((uuid::Uuid::new_v4().as_u128() % 300_000_000) as i64);
    let owner = create_user(store).await;
    let owner_id = owner.id;
    let created = create_rule(store, &owner, &spec(Some(&unique_symbol()), RuleKind::Above, 100.0)).await;
    let older = fire(store, &created, start).await;
    let newer = fire(store, &created, start + Duration::seconds(1)).await;
    let unpublished = |before: DateTime<Utc>, limit| async move {
        let alerts = store.unpublished_alerts(before, limit).await.expect("unpublished answers");
        alerts.into_iter().filter(|a| a.user_id == owner_id).map(|a| a.id).collect::<Vec<_>>()
    };

    assert_eq!(unpublished(start + Duration::seconds(2), 1000).await, [older.id, newer.id], "oldest first");
    assert_eq!(unpublished(start + Duration::seconds(1), 1000).await, [older.id], "fired strictly before");
    let one = store.unpublished_alerts(start + Duration::seconds(2), 1).await.expect("unpublished answers");
    assert_eq!(one.len(), 1, "within the limit");
    assert_eq!(one[0].deliveries.len(), 2, "with their deliveries");

    store.mark_published(older.id).await.expect("alert is marked");
    assert!(alert(store, &older).await.expect("alert exists").published);
    assert_eq!(unpublished(start + Duration::seconds(2), 1000).await, [newer.id], "published ones are done");
    store.mark_published(newer.id).await.expect("alert is marked");
    assert!(unpublished(start + Duration::seconds(2), 1000).await.is_empty());
}

pub async fn portfolio_without_deposit_is_empty_and_deposits_add_up(store: &dyn AccountStore) {
    let owner = create_user(store).await;
    assert_eq!(portfolio(store, &owner).await, Portfolio::default(), "never deposited");
    let first = deposit(store, &owner, "100.50").await;
    assert_eq!(first, Portfolio { cash: d("100.50"), ..Portfolio::default() });
    let second = deposit(store, &owner, "0.25").await;
    assert_eq!(second.cash, d("100.75"));
    assert_eq!(portfolio(store, &owner).await, second);
    assert!(orders(store, &owner).await.is_empty(), "a deposit is no order");
}

pub async fn buying_and_selling_move_cash_positions_and_realised_pnl_exactly(store: &dyn AccountStore) {
    let (symbol, second) = (unique_symbol(), unique_symbol());
    let owner = create_user(store).await;
    deposit(store, &owner, "1000").await;

    let (bought, after) = place(store, &owner, &order(&symbol, Side::Buy, "3", "100.005")).await;
    assert_eq!((bought.user_id, &bought.symbol, bought.side), (owner.id, &symbol, Side::Buy));
    assert_eq!((bought.quantity, bought.price, bought.value, bought.at), (d("3"), d("100.005"), d("300.02"), at(0)));
    assert_eq!(after.cash, d("699.98"), "300.015 rounds half away from zero");
    assert_eq!(after.positions, [position(&symbol, "3", "100.00666667")]);

    let (_, after) = place(store, &owner, &order(&symbol, Side::Buy, "1", "200")).await;
    assert_eq!(after.positions, [position(&symbol, "4", "125.005")], "(300.02 + 200) / 4");
    assert_eq!(after.cash, d("499.98"));

    let (sold, after) = place(store, &owner, &order(&symbol, Side::Sell, "1.5", "130")).await;
    assert_eq!(sold.value, d("195.00"));
    assert_eq!(after.cash, d("694.98"));
    assert_eq!(after.realised_pnl, d("7.49"), "195.00 - cents(1.5 x 125.005)");
    assert_eq!(after.positions, [position(&symbol, "2.5", "125.005")], "the rest keeps its average cost");

    let (_, after) = place(store, &owner, &order(&second, Side::Buy, "1", "0.5")).await;
    let mut expected = vec![position(&symbol, "2.5", "125.005"), position(&second, "1", "0.5")];
    expected.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    assert_eq!(after.positions, expected, "positions by symbol");

    let (_, after) = place(store, &owner, &order(&symbol, Side::Sell, "2.5", "100")).await;
    assert_eq!(after.positions, [position(&second, "1", "0.5")], "a position sold out is gone");
    assert_eq!(after.realised_pnl, d("7.49") + d("250.00") - d("312.51"));
    assert_eq!(after.cash, d("694.48") + d("250.00"));
    assert_eq!(portfolio(store, &owner).await, after, "reads back the same");

    let history = orders(store, &owner).await;
    let sides: Vec<(Side, Decimal)> = history.iter().map(|o| (o.side, o.quantity)).collect();
    assert_eq!(
        sides,
        [(Side::Sell, d("2.5")), (Side::Buy, d("1")), (Side::Sell, d("1.5")), (Side::Buy, d("1")), (Side::Buy, d("3"))],
        "newest first"
    );
    assert_eq!(history.last(), Some(&bought));
    let limited = store.orders_of(owner.id, 2).await.expect("orders answer");
    assert_eq!(limited, history[..2], "the newest within the limit");
    let all = store.all_orders(1000).await.expect("all orders answer");
    let listed: Vec<&Order> = all.iter().filter(|o| o.user_id == owner.id).collect();
    assert_eq!(listed, history.iter().collect::<Vec<_>>(), "every user's, newest first");
}

pub async fn refused_orders_change_nothing(store: &dyn AccountStore) {
    let symbol = unique_symbol();
    let owner = create_user(store).await;
    let broke = store.place_order(owner.id, &order(&symbol, Side::Buy, "1", "1"), at(0)).await;
    assert!(matches!(broke, Err(AccountError::Order(OrderError::InsufficientCash { .. }))), "no cash: {broke:?}");
    assert_eq!(portfolio(store, &owner).await, Portfolio::default(), "still never deposited");

    deposit(store, &owner, "100").await;
    place(store, &owner, &order(&symbol, Side::Buy, "1", "50")).await;
    let before = portfolio(store, &owner).await;
    let history = orders(store, &owner).await;

    let refused = [
        (order(&symbol, Side::Buy, "2", "25.01"), "buying beyond cash"),
        (order(&symbol, Side::Sell, "1.00000001", "50"), "selling more than held"),
        (order(&unique_symbol(), Side::Sell, "1", "50"), "selling what is not held"),
        (order(&symbol, Side::Buy, "0.0001", "1"), "worth less than a cent"),
    ];
    for (request, what) in refused {
        let result = store.place_order(owner.id, &request, at(1)).await;
        assert!(matches!(result, Err(AccountError::Order(_))), "{what}: {result:?}");
        assert_eq!(portfolio(store, &owner).await, before, "{what}: portfolio unchanged");
        assert_eq!(orders(store, &owner).await, history, "{what}: no order");
    }
    let exact = place(store, &owner, &order(&symbol, Side::Buy, "2", "25")).await;
    assert_eq!(exact.1.cash, Decimal::ZERO, "exactly the cash is enough");
}

pub async fn concurrent_orders_never_spend_more_than_the_cash(store: &dyn AccountStore) {
    let symbol = unique_symbol();
    let owner = create_user(store).await;
    deposit(store, &owner, "100").await;
    // Ten buys of 30 each: only three are affordable, whichever run first.
    let buy = order(&symbol, Side::Buy, "1", "30");
    let results = futures::future::join_all((0..10).map(|_| store.place_order(owner.id, &buy, at(0)))).await;
    let done = results.iter().filter(|r| r.is_ok()).count();
    let refused =
        results.iter().filter(|r| matches!(r, Err(AccountError::Order(OrderError::InsufficientCash { .. })))).count();
    assert_eq!((done, refused), (3, 7), "{results:?}");
    let after = portfolio(store, &owner).await;
    assert_eq!(after.cash, d("10"));
    assert_eq!(after.positions, [position(&symbol, "3", "30")]);
    assert_eq!(orders(store, &owner).await.len(), done, "one order per executed buy");

    // Two buys that each fit but not both.
    let pair = create_user(store).await;
    deposit(store, &pair, "100").await;
    let big = order(&symbol, Side::Buy, "1", "60");
    let (a, b) = tokio::join!(store.place_order(pair.id, &big, at(0)), store.place_order(pair.id, &big, at(0)));
    assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1, "exactly one: {a:?} {b:?}");
    assert_eq!(portfolio(store, &pair).await.cash, d("40"));
}

pub async fn decimals_round_trip_exactly(store: &dyn AccountStore) {
    let symbol = unique_symbol();
    let owner = create_user(store).await;
    assert_eq!(deposit(store, &owner, "12345678901.23").await.cash, d("12345678901.23"));
    let (bought, after) = place(store, &owner, &order(&symbol, Side::Buy, "0.00000001", "98765432.12345678")).await;
    assert_eq!(bought.value, d("0.99"), "0.9876543212345678 in cents");
    assert_eq!(bought.price.to_string(), "98765432.12345678");
    assert_eq!(after.cash, d("12345678900.24"));
    assert_eq!(after.positions[0].quantity.to_string(), "0.00000001", "not a float");
    assert_eq!(after.positions[0].avg_cost, d("99000000"));
    let stored = portfolio(store, &owner).await;
    assert_eq!(stored, after);
    assert_eq!(stored.cash.to_string(), "12345678900.24");
    assert_eq!(orders(store, &owner).await, [bought]);
}

pub async fn sql_metacharacters_are_stored_verbatim(store: &dyn AccountStore) {
    let email = Email::parse(&format!("o'brien+{}@example.com", unique("x"))).expect("a valid address");
    let hook = "https://example.com/h?q='; DROP TABLE users; --".to_string();
    let secret = r#"'"\%_;--/*"#.to_string();
    let new = NewUser {
        password_hash: "x'); DELETE FROM users; --".to_string(),
        targets: Targets {
            email: true,
            webhook_url: Some(hook.clone()),
            webhook_secret: Some(secret.clone()),
            telegram_chat_id: None,
        },
        ..new_user(email.clone())
    };
    let created = store.create_user(&new).await.expect("user is created");
    assert_eq!((created.email.as_str(), created.password_hash.as_str()), (email.as_str(), new.password_hash.as_str()));
    assert_eq!(created.targets, new.targets);
    assert_eq!(store.user_by_email(&email).await.expect("lookup answers"), Some(created.clone()));

    let code = format!("' OR '1'='1 {}", unique("code"));
    let patch = UserPatch { telegram_link_code: Some(Some(code.clone())), ..UserPatch::default() };
    store.update_user(created.id, &patch).await.expect("update answers");
    assert_eq!(store.link_telegram("' OR '1'='1", 1).await.expect("link answers"), None, "no injection");
    assert!(store.link_telegram(&code, unique_chat()).await.expect("link answers").is_some(), "the code itself");

    let rule = create_rule(store, &created, &spec(Some(&unique_symbol()), RuleKind::Above, 1.0)).await;
    let message = "Robert'); DROP TABLE alerts; -- rose \u{2191} 5 %".to_string();
    let new_alert = NewAlert { message: message.clone(), ..new_alert(&rule, at(1), &[Channel::Webhook]) };
    let stored = store.save_evaluation(rule.id, 0, &firing_state(at(1)), Some(&new_alert)).await;
    let stored = stored.expect("evaluation is saved").expect("alert is stored");
    assert_eq!(alert(store, &stored).await.map(|a| a.message), Some(message));
    assert_eq!(user(store, &created).await.map(|u| u.targets.webhook_url), Some(Some(hook)), "and users is intact");
}

pub async fn symbol_refcounts_count_rules_and_open_positions(store: &dyn AccountStore) {
    let [ruled, held, both, sold] = [unique_symbol(), unique_symbol(), unique_symbol(), unique_symbol()];
    let (ann, bob) = (create_user(store).await, create_user(store).await);
    create_rule(store, &ann, &spec(Some(&ruled), RuleKind::Above, 1.0)).await;
    create_rule(store, &bob, &spec(Some(&ruled), RuleKind::Below, 1.0)).await;
    create_rule(store, &ann, &spec(Some(&both), RuleKind::Above, 1.0)).await;
    create_rule(store, &ann, &spec(None, RuleKind::PortfolioChangePct, 1.0)).await;
    for user in [&ann, &bob] {
        deposit(store, user, "100").await;
        place(store, user, &order(&held, Side::Buy, "1", "1")).await;
    }
    place(store, &bob, &order(&both, Side::Buy, "1", "1")).await;
    place(store, &bob, &order(&sold, Side::Buy, "1", "1")).await;
    place(store, &bob, &order(&sold, Side::Sell, "1", "1")).await;

    let mine = [&ruled, &held, &both, &sold];
    let refs = store.symbol_refcounts().await.expect("refcounts answer");
    let listed: Vec<&SymbolRefs> = refs.iter().filter(|r| mine.contains(&&r.symbol)).collect();
    let mut expected = [
        SymbolRefs { symbol: ruled.clone(), rules: 2, positions: 0 },
        SymbolRefs { symbol: held.clone(), rules: 0, positions: 2 },
        SymbolRefs { symbol: both.clone(), rules: 1, positions: 1 },
    ];
    expected.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    assert_eq!(listed, expected.iter().collect::<Vec<_>>(), "a symbol sold out and without rules is absent");
}

mod embedded {
    use super::*;
    use crate::helpers::sqlite;

    #[tokio::test]
    async fn created_user_reads_back_by_id_and_email() {
        let (_dir, store) = sqlite().await;
        super::created_user_reads_back_by_id_and_email(&store).await;
    }

    #[tokio::test]
    async fn update_user_changes_only_the_given_fields() {
        let (_dir, store) = sqlite().await;
        super::update_user_changes_only_the_given_fields(&store).await;
    }

    #[tokio::test]
    async fn duplicate_email_is_refused_on_create_and_update() {
        let (_dir, store) = sqlite().await;
        super::duplicate_email_is_refused_on_create_and_update(&store).await;
    }

    #[tokio::test]
    async fn token_version_moves_when_password_email_or_role_change() {
        let (_dir, store) = sqlite().await;
        super::token_version_moves_when_password_email_or_role_change(&store).await;
    }

    #[tokio::test]
    async fn deleting_a_user_deletes_everything_of_theirs() {
        let (_dir, store) = sqlite().await;
        super::deleting_a_user_deletes_everything_of_theirs(&store).await;
    }

    #[tokio::test]
    async fn users_are_listed_oldest_first() {
        let (_dir, store) = sqlite().await;
        super::users_are_listed_oldest_first(&store).await;
    }

    #[tokio::test]
    async fn has_admin_once_an_admin_exists() {
        let (_dir, store) = sqlite().await;
        assert!(!store.has_admin().await.expect("has_admin answers"), "a fresh store has none");
        create_user(&store).await;
        assert!(!store.has_admin().await.expect("has_admin answers"), "a user is no admin");
        super::has_admin_once_an_admin_exists(&store).await;
    }

    #[tokio::test]
    async fn users_are_counted_by_role() {
        let (_dir, store) = sqlite().await;
        assert_eq!(store.users_by_role().await.expect("counts answer"), [], "a fresh store has nobody");
        super::users_are_counted_by_role(&store).await;
        assert_eq!(store.users_by_role().await.expect("counts answer"), [(Role::Admin, 1), (Role::User, 2)]);
    }

    #[tokio::test]
    async fn telegram_link_code_links_the_chat_once() {
        let (_dir, store) = sqlite().await;
        super::telegram_link_code_links_the_chat_once(&store).await;
    }

    #[tokio::test]
    async fn notification_slot_respects_the_minimum_interval() {
        let (_dir, store) = sqlite().await;
        super::notification_slot_respects_the_minimum_interval(&store).await;
    }

    #[tokio::test]
    async fn rules_are_scoped_to_their_owner() {
        let (_dir, store) = sqlite().await;
        super::rules_are_scoped_to_their_owner(&store).await;
    }

    #[tokio::test]
    async fn updating_a_rule_replaces_spec_and_state_and_bumps_the_version() {
        let (_dir, store) = sqlite().await;
        super::updating_a_rule_replaces_spec_and_state_and_bumps_the_version(&store).await;
    }

    #[tokio::test]
    async fn rules_for_quote_include_portfolio_rules_of_holders_only() {
        let (_dir, store) = sqlite().await;
        super::rules_for_quote_include_portfolio_rules_of_holders_only(&store).await;
    }

    #[tokio::test]
    async fn save_evaluation_stores_state_and_alert_with_pending_deliveries() {
        let (_dir, store) = sqlite().await;
        super::save_evaluation_stores_state_and_alert_with_pending_deliveries(&store).await;
    }

    #[tokio::test]
    async fn save_states_writes_current_rules_and_names_the_moved_on() {
        let (_dir, store) = sqlite().await;
        super::save_states_writes_current_rules_and_names_the_moved_on(&store).await;
    }

    #[tokio::test]
    async fn stale_evaluation_conflicts_and_writes_nothing() {
        let (_dir, store) = sqlite().await;
        super::stale_evaluation_conflicts_and_writes_nothing(&store).await;
    }

    #[tokio::test]
    async fn concurrent_evaluations_of_one_version_save_once() {
        let (_dir, store) = sqlite().await;
        super::concurrent_evaluations_of_one_version_save_once(&store).await;
    }

    #[tokio::test]
    async fn deleting_a_rule_keeps_its_alerts() {
        let (_dir, store) = sqlite().await;
        super::deleting_a_rule_keeps_its_alerts(&store).await;
    }

    #[tokio::test]
    async fn alerts_are_listed_newest_first_within_limit() {
        let (_dir, store) = sqlite().await;
        super::alerts_are_listed_newest_first_within_limit(&store).await;
    }

    #[tokio::test]
    async fn deliveries_are_upserted_per_channel() {
        let (_dir, store) = sqlite().await;
        super::deliveries_are_upserted_per_channel(&store).await;
    }

    #[tokio::test]
    async fn unpublished_alerts_are_oldest_first_until_marked_published() {
        let (_dir, store) = sqlite().await;
        super::unpublished_alerts_are_oldest_first_until_marked_published(&store).await;
    }

    #[tokio::test]
    async fn portfolio_without_deposit_is_empty_and_deposits_add_up() {
        let (_dir, store) = sqlite().await;
        super::portfolio_without_deposit_is_empty_and_deposits_add_up(&store).await;
    }

    #[tokio::test]
    async fn buying_and_selling_move_cash_positions_and_realised_pnl_exactly() {
        let (_dir, store) = sqlite().await;
        super::buying_and_selling_move_cash_positions_and_realised_pnl_exactly(&store).await;
    }

    #[tokio::test]
    async fn refused_orders_change_nothing() {
        let (_dir, store) = sqlite().await;
        super::refused_orders_change_nothing(&store).await;
    }

    #[tokio::test]
    async fn concurrent_orders_never_spend_more_than_the_cash() {
        let (_dir, store) = sqlite().await;
        super::concurrent_orders_never_spend_more_than_the_cash(&store).await;
    }

    #[tokio::test]
    async fn decimals_round_trip_exactly() {
        let (_dir, store) = sqlite().await;
        super::decimals_round_trip_exactly(&store).await;
    }

    #[tokio::test]
    async fn sql_metacharacters_are_stored_verbatim() {
        let (_dir, store) = sqlite().await;
        super::sql_metacharacters_are_stored_verbatim(&store).await;
    }

    #[tokio::test]
    async fn symbol_refcounts_count_rules_and_open_positions() {
        let (_dir, store) = sqlite().await;
        super::symbol_refcounts_count_rules_and_open_positions(&store).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        let (_dir, store) = sqlite().await;
        super::run_all(&store).await;
    }

    #[tokio::test]
    async fn accounts_survive_reopening_the_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("lizards.db");
        let symbol = unique_symbol();
        let owner = {
            let store = SqliteStore::open(&path).await.expect("store opens");
            let owner = create_user(&store).await;
            deposit(&store, &owner, "10").await;
            place(&store, &owner, &order(&symbol, Side::Buy, "2", "1.25")).await;
            owner
        };
        let reopened = SqliteStore::open(&path).await.expect("store reopens");
        assert_eq!(user(&reopened, &owner).await, Some(owner.clone()));
        let expected =
            Portfolio { cash: d("7.50"), realised_pnl: d("0"), positions: vec![position(&symbol, "2", "1.25")] };
        assert_eq!(portfolio(&reopened, &owner).await, expected);
    }
}

/// The same checks on PostgreSQL (`DATABASE_URL`), all in one shared
/// database: every check uses addresses and symbols of its own, so parallel
/// tests, other test binaries and earlier runs do not disturb it.
mod postgres {
    use lizards_shared::store::PostgresStore;

    use super::*;
    use crate::helpers::{postgres, real_url, within};

    #[tokio::test]
    async fn created_user_reads_back_by_id_and_email() {
        let Some(store) = postgres().await else { return };
        super::created_user_reads_back_by_id_and_email(&store).await;
    }

    #[tokio::test]
    async fn update_user_changes_only_the_given_fields() {
        let Some(store) = postgres().await else { return };
        super::update_user_changes_only_the_given_fields(&store).await;
    }

    #[tokio::test]
    async fn duplicate_email_is_refused_on_create_and_update() {
        let Some(store) = postgres().await else { return };
        super::duplicate_email_is_refused_on_create_and_update(&store).await;
    }

    #[tokio::test]
    async fn token_version_moves_when_password_email_or_role_change() {
        let Some(store) = postgres().await else { return };
        super::token_version_moves_when_password_email_or_role_change(&store).await;
    }

    #[tokio::test]
    async fn deleting_a_user_deletes_everything_of_theirs() {
        let Some(store) = postgres().await else { return };
        super::deleting_a_user_deletes_everything_of_theirs(&store).await;
    }

    #[tokio::test]
    async fn users_are_listed_oldest_first() {
        let Some(store) = postgres().await else { return };
        super::users_are_listed_oldest_first(&store).await;
    }

    #[tokio::test]
    async fn has_admin_once_an_admin_exists() {
        let Some(store) = postgres().await else { return };
        super::has_admin_once_an_admin_exists(&store).await;
    }

    #[tokio::test]
    async fn users_are_counted_by_role() {
        let Some(store) = postgres().await else { return };
        super::users_are_counted_by_role(&store).await;
    }

    #[tokio::test]
    async fn telegram_link_code_links_the_chat_once() {
        let Some(store) = postgres().await else { return };
        super::telegram_link_code_links_the_chat_once(&store).await;
    }

    #[tokio::test]
    async fn notification_slot_respects_the_minimum_interval() {
        let Some(store) = postgres().await else { return };
        super::notification_slot_respects_the_minimum_interval(&store).await;
    }

    #[tokio::test]
    async fn rules_are_scoped_to_their_owner() {
        let Some(store) = postgres().await else { return };
        super::rules_are_scoped_to_their_owner(&store).await;
    }

    #[tokio::test]
    async fn updating_a_rule_replaces_spec_and_state_and_bumps_the_version() {
        let Some(store) = postgres().await else { return };
        super::updating_a_rule_replaces_spec_and_state_and_bumps_the_version(&store).await;
    }

    #[tokio::test]
    async fn rules_for_quote_include_portfolio_rules_of_holders_only() {
        let Some(store) = postgres().await else { return };
        super::rules_for_quote_include_portfolio_rules_of_holders_only(&store).await;
    }

    #[tokio::test]
    async fn save_evaluation_stores_state_and_alert_with_pending_deliveries() {
        let Some(store) = postgres().await else { return };
        super::save_evaluation_stores_state_and_alert_with_pending_deliveries(&store).await;
    }

    #[tokio::test]
    async fn save_states_writes_current_rules_and_names_the_moved_on() {
        let Some(store) = postgres().await else { return };
        super::save_states_writes_current_rules_and_names_the_moved_on(&store).await;
    }

    #[tokio::test]
    async fn stale_evaluation_conflicts_and_writes_nothing() {
        let Some(store) = postgres().await else { return };
        super::stale_evaluation_conflicts_and_writes_nothing(&store).await;
    }

    #[tokio::test]
    async fn concurrent_evaluations_of_one_version_save_once() {
        let Some(store) = postgres().await else { return };
        super::concurrent_evaluations_of_one_version_save_once(&store).await;
    }

    #[tokio::test]
    async fn deleting_a_rule_keeps_its_alerts() {
        let Some(store) = postgres().await else { return };
        super::deleting_a_rule_keeps_its_alerts(&store).await;
    }

    #[tokio::test]
    async fn alerts_are_listed_newest_first_within_limit() {
        let Some(store) = postgres().await else { return };
        super::alerts_are_listed_newest_first_within_limit(&store).await;
    }

    #[tokio::test]
    async fn deliveries_are_upserted_per_channel() {
        let Some(store) = postgres().await else { return };
        super::deliveries_are_upserted_per_channel(&store).await;
    }

    #[tokio::test]
    async fn unpublished_alerts_are_oldest_first_until_marked_published() {
        let Some(store) = postgres().await else { return };
        super::unpublished_alerts_are_oldest_first_until_marked_published(&store).await;
    }

    #[tokio::test]
    async fn portfolio_without_deposit_is_empty_and_deposits_add_up() {
        let Some(store) = postgres().await else { return };
        super::portfolio_without_deposit_is_empty_and_deposits_add_up(&store).await;
    }

    #[tokio::test]
    async fn buying_and_selling_move_cash_positions_and_realised_pnl_exactly() {
        let Some(store) = postgres().await else { return };
        super::buying_and_selling_move_cash_positions_and_realised_pnl_exactly(&store).await;
    }

    #[tokio::test]
    async fn refused_orders_change_nothing() {
        let Some(store) = postgres().await else { return };
        super::refused_orders_change_nothing(&store).await;
    }

    #[tokio::test]
    async fn concurrent_orders_never_spend_more_than_the_cash() {
        let Some(store) = postgres().await else { return };
        super::concurrent_orders_never_spend_more_than_the_cash(&store).await;
    }

    #[tokio::test]
    async fn decimals_round_trip_exactly() {
        let Some(store) = postgres().await else { return };
        super::decimals_round_trip_exactly(&store).await;
    }

    #[tokio::test]
    async fn sql_metacharacters_are_stored_verbatim() {
        let Some(store) = postgres().await else { return };
        super::sql_metacharacters_are_stored_verbatim(&store).await;
    }

    #[tokio::test]
    async fn symbol_refcounts_count_rules_and_open_positions() {
        let Some(store) = postgres().await else { return };
        super::symbol_refcounts_count_rules_and_open_positions(&store).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        let Some(store) = postgres().await else { return };
        super::run_all(&store).await;
    }

    /// How many of five buys one after the other are executed.
    async fn buy_five_times(store: &dyn AccountStore, owner: UserId, buy: &OrderRequest) -> usize {
        let mut done = 0;
        for _ in 0..5 {
            done += usize::from(store.place_order(owner, buy, at(0)).await.is_ok());
        }
        done
    }

    /// Orders through two stores (two pools, as two provider instances
    /// would) still take the user's lock in turn.
    #[tokio::test]
    async fn orders_through_two_stores_at_once_never_overspend() {
        let Some(url) = real_url("DATABASE_URL") else { return };
        let (first, second) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
        let (first, second) = (first.expect("store connects"), second.expect("store connects"));
        let symbol = unique_symbol();
        let owner = create_user(&first).await;
        deposit(&first, &owner, "100").await;
        let buy = order(&symbol, Side::Buy, "1", "30");
        let (a, b) = within("ten orders", async {
            tokio::join!(buy_five_times(&first, owner.id, &buy), buy_five_times(&second, owner.id, &buy))
        })
        .await;
        assert_eq!(a + b, 3, "three affordable buys in all");
        assert_eq!(portfolio(&second, &owner).await.cash, d("10"));
        assert_eq!(orders(&first, &owner).await.len(), 3);
    }
}
