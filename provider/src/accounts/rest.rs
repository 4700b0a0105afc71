//! REST routes of accounts, alert rules, alerts and the portfolio:
//! bearer-token extractors, request parsing and the JSON shapes.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, request::Parts},
    routing::{get, post},
};
use lizards_shared::{
    accounts::{Order, Portfolio, Rule, RuleId, User},
    jwt::Role,
    time,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Accounts,
    portfolio::{DepositInput, OrderInput, Overview},
    rules::{NewRule, RuleInput},
    users::{Registration, UserChanges},
};
use crate::{alerts::alert_json, body::JsonBody, error::ApiError};

/// Rows a list returns unless `limit` says otherwise, and at most.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

type Api = State<Arc<Accounts>>;
type Reply = Result<Json<Value>, ApiError>;

pub fn routes(accounts: Arc<Accounts>) -> Router {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/users/me", get(me).patch(update_me).delete(delete_me))
        .route("/users/me/telegram", post(telegram_link))
        .route("/alerts", get(alerts))
        .route("/alerts/rules", get(rules).post(create_rule))
        .route("/alerts/rules/{id}", get(rule).patch(update_rule).delete(delete_rule))
        .route("/portfolio", get(portfolio))
        .route("/portfolio/deposit", post(deposit))
        .route("/portfolio/orders", get(orders).post(place_order))
        .merge(super::admin::routes())
        .with_state(accounts)
}

/// The caller, from `Authorization: Bearer <JWT>`.
pub struct Caller(pub User);

/// A caller with the admin role (403 for other users).
pub struct Admin(pub User);

/// The token of an `Authorization: Bearer` header.
pub use lizards_shared::admin::bearer_header as bearer;

impl FromRequestParts<Arc<Accounts>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, accounts: &Arc<Accounts>) -> Result<Caller, ApiError> {
        let token =
            bearer(&parts.headers).ok_or_else(|| ApiError::Unauthenticated("a bearer token is required".into()))?;
        accounts.authenticate(token).await.map(Caller)
    }
}

impl FromRequestParts<Arc<Accounts>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, accounts: &Arc<Accounts>) -> Result<Admin, ApiError> {
        let Caller(user) = Caller::from_request_parts(parts, accounts).await?;
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden("this needs the admin role".into()));
        }
        Ok(Admin(user))
    }
}

/// A numeric id from the path; anything else names no row (404).
pub fn id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| ApiError::NotFound(format!("no {what} {}", text.chars().take(32).collect::<String>())))
}

/// `?limit=` within 1..=1000.
pub fn limit(params: &HashMap<String, String>) -> Result<u32, ApiError> {
    match params.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))),
        },
    }
}

pub fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "created_at": time::rfc3339(&user.created_at),
        "notifications": {
            "email": user.targets.email,
            "webhook_url": user.targets.webhook_url,
            "webhook_signed": user.targets.webhook_secret.is_some(),
            "telegram_chat_id": user.targets.telegram_chat_id,
        },
        "min_notification_interval": user.min_notification_interval,
    })
}

pub fn rule_json(rule: &Rule) -> Value {
    let spec = &rule.spec;
    json!({
        "id": rule.id,
        "user_id": rule.user_id,
        "symbol": spec.symbol,
        "kind": spec.kind,
        "threshold": spec.threshold,
        "window": spec.window_minutes,
        "cooldown": spec.cooldown,
        "channels": spec.channels,
        "created_at": time::rfc3339(&rule.created_at),
        "last_fired_at": rule.state.last_fired_at.as_ref().map(time::rfc3339),
    })
}

pub fn order_json(order: &Order) -> Value {
    json!({
        "id": order.id,
        "user_id": order.user_id,
        "symbol": order.symbol,
        "side": order.side,
        "quantity": order.quantity,
        "price": order.price,
        "value": money(order.value),
        "at": time::rfc3339(&order.at),
    })
}

/// A cash amount as a decimal string with (at least) cents: `"1000.10"`.
pub fn money(amount: Decimal) -> Value {
    let mut amount = amount;
    if amount.scale() < 2 {
        amount.rescale(2);
    }
    Value::String(amount.to_string())
}

fn cash_json(portfolio: &Portfolio) -> Value {
    json!({ "cash": money(portfolio.cash), "realised_pnl": money(portfolio.realised_pnl) })
}

fn overview_json(overview: &Overview) -> Value {
    let positions: Vec<Value> = overview
        .positions
        .iter()
        .map(|valued| {
            json!({
                "symbol": valued.position.symbol,
                "quantity": valued.position.quantity,
                "avg_cost": valued.position.avg_cost,
                "price": valued.price,
                "value": valued.value.map(money),
                "unrealised_pnl": valued.unrealised_pnl.map(money),
            })
        })
        .collect();
    json!({
        "cash": money(overview.portfolio.cash),
        "positions": positions,
        "positions_value": money(overview.positions_value),
        "total_value": money(overview.total_value),
        "realised_pnl": money(overview.portfolio.realised_pnl),
        "unrealised_pnl": money(overview.unrealised_pnl),
        "currency": "USD",
    })
}

async fn register(
    State(accounts): Api,
    JsonBody(registration): JsonBody<Registration>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let registered = accounts.register(registration).await?;
    let mut body = user_json(&registered.user);
    body["rules"] = registered.rules.iter().map(rule_json).collect();
    if let Some(code) = registered.telegram_link_code {
        body["telegram"] = telegram_link_json(&code);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

async fn login(State(accounts): Api, JsonBody(login): JsonBody<Login>) -> Reply {
    let token = accounts.login(&login.email, &login.password).await?;
    Ok(Json(json!({ "access_token": token.access_token, "token_type": "Bearer", "expires_in": token.expires_in })))
}

async fn me(Caller(user): Caller) -> Json<Value> {
    Json(user_json(&user))
}

async fn update_me(State(accounts): Api, Caller(user): Caller, JsonBody(changes): JsonBody<UserChanges>) -> Reply {
    Ok(Json(user_json(&accounts.update_own(&user, changes).await?)))
}

async fn delete_me(State(accounts): Api, Caller(user): Caller) -> Result<StatusCode, ApiError> {
    accounts.delete(user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn telegram_link(State(accounts): Api, Caller(user): Caller) -> Reply {
    let code = accounts.telegram_link_code(user.id).await?;
    Ok(Json(telegram_link_json(&code)))
}

/// What a user sends the bot to link a chat.
fn telegram_link_json(code: &str) -> Value {
    json!({ "link_code": code, "command": format!("/start {code}") })
}

async fn alerts(State(accounts): Api, Caller(user): Caller, Query(params): Query<HashMap<String, String>>) -> Reply {
    let alerts = accounts.store.alerts_of(user.id, limit(&params)?).await?;
    Ok(Json(json!({ "alerts": alerts.iter().map(alert_json).collect::<Vec<_>>() })))
}

async fn rules(State(accounts): Api, Caller(user): Caller) -> Reply {
    let rules = accounts.store.rules_of(user.id).await?;
    Ok(Json(json!({ "rules": rules.iter().map(rule_json).collect::<Vec<_>>() })))
}

async fn create_rule(
    State(accounts): Api,
    Caller(user): Caller,
    JsonBody(input): JsonBody<RuleInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rule = accounts.create_rule(&user, NewRule::parse(input, accounts.rule_limits)?).await?;
    Ok((StatusCode::CREATED, Json(rule_json(&rule))))
}

async fn rule(State(accounts): Api, Caller(user): Caller, Path(text): Path<String>) -> Reply {
    let id: RuleId = id(&text, "alert rule")?;
    Ok(Json(rule_json(&accounts.rule(user.id, id).await?)))
}

async fn update_rule(
    State(accounts): Api,
    Caller(user): Caller,
    Path(text): Path<String>,
    JsonBody(changes): JsonBody<RuleInput>,
) -> Reply {
    let id: RuleId = id(&text, "alert rule")?;
    Ok(Json(rule_json(&accounts.update_rule(user.id, id, changes).await?)))
}

async fn delete_rule(
    State(accounts): Api,
    Caller(user): Caller,
    Path(text): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: RuleId = id(&text, "alert rule")?;
    accounts.delete_rule(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn portfolio(State(accounts): Api, Caller(user): Caller) -> Reply {
    Ok(Json(overview_json(&accounts.overview(user.id).await?)))
}

async fn deposit(State(accounts): Api, Caller(user): Caller, JsonBody(input): JsonBody<DepositInput>) -> Reply {
    Ok(Json(cash_json(&accounts.deposit(user.id, input).await?)))
}

async fn place_order(
    State(accounts): Api,
    Caller(user): Caller,
    JsonBody(input): JsonBody<OrderInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (order, portfolio) = accounts.place_order(user.id, input).await?;
    let mut body = order_json(&order);
    body["portfolio"] = cash_json(&portfolio);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn orders(State(accounts): Api, Caller(user): Caller, Query(params): Query<HashMap<String, String>>) -> Reply {
    let orders = accounts.orders(user.id, limit(&params)?).await?;
    Ok(Json(json!({ "orders": orders.iter().map(order_json).collect::<Vec<_>>() })))
}
