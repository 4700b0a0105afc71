//! Admin routes: manage users and read every table.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::get,
};
use lizards_shared::{
    accounts::{NewUser, Targets, UserId},
    broker::{self, DEAD_QUEUE},
    jwt::Role,
    time,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Accounts, passwords,
    rest::{Admin, id, limit, order_json, rule_json, user_json},
    users::{UserChanges, role},
};
use crate::{alerts::alert_json, body::JsonBody, error::ApiError};

type Api = State<Arc<Accounts>>;
type Reply = Result<Json<Value>, ApiError>;

pub fn routes() -> Router<Arc<Accounts>> {
    Router::new()
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/{id}", get(user).patch(update_user).delete(delete_user))
        .route("/admin/rules", get(rules))
        .route("/admin/alerts", get(alerts))
        .route("/admin/orders", get(orders))
        .route("/admin/symbols", get(symbols))
        .route("/admin/quotes", get(quotes).delete(delete_quotes))
        .route("/admin/dead-letters", get(dead_letters))
}

#[derive(Deserialize)]
struct NewAccount {
    email: String,
    password: String,
    role: Option<String>,
}

async fn users(State(accounts): Api, _admin: Admin) -> Reply {
    let users = accounts.store.users().await?;
    Ok(Json(json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() })))
}

async fn create_user(
    State(accounts): Api,
    _admin: Admin,
    JsonBody(account): JsonBody<NewAccount>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let email = lizards_shared::accounts::Email::parse(&account.email)
        .map_err(|e| ApiError::invalid("email", e.to_string()))?;
    passwords::check(&account.password)?;
    let role = account.role.as_deref().map(role).transpose()?.unwrap_or(Role::User);
    let password_hash = passwords::hash(&account.password).await?;
    let targets = Targets { email: true, ..Targets::default() };
    let user = accounts
        .store
        .create_user(&NewUser { email, password_hash, role, targets, min_notification_interval: 0 })
        .await?;
    tracing::info!(user = %user.id, ?role, "user created by an admin");
    Ok((StatusCode::CREATED, Json(user_json(&user))))
}

async fn user(State(accounts): Api, _admin: Admin, Path(text): Path<String>) -> Reply {
    let id: UserId = id(&text, "user")?;
    let user = accounts.store.user(id).await?.ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
    Ok(Json(user_json(&user)))
}

async fn update_user(
    State(accounts): Api,
    _admin: Admin,
    Path(text): Path<String>,
    JsonBody(changes): JsonBody<UserChanges>,
) -> Reply {
    let id: UserId = id(&text, "user")?;
    Ok(Json(user_json(&accounts.update(id, changes, true).await?)))
}

async fn delete_user(State(accounts): Api, _admin: Admin, Path(text): Path<String>) -> Result<StatusCode, ApiError> {
    let id: UserId = id(&text, "user")?;
    accounts.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rules(State(accounts): Api, _admin: Admin) -> Reply {
    let rules = accounts.store.all_rules().await?;
    Ok(Json(json!({ "rules": rules.iter().map(rule_json).collect::<Vec<_>>() })))
}

async fn alerts(State(accounts): Api, _admin: Admin, Query(params): Query<HashMap<String, String>>) -> Reply {
    let alerts = accounts.store.all_alerts(limit(&params)?).await?;
    Ok(Json(json!({ "alerts": alerts.iter().map(|a| {
        let mut json = alert_json(a);
        json["user_id"] = json!(a.user_id);
        json
    }).collect::<Vec<_>>() })))
}

async fn orders(State(accounts): Api, _admin: Admin, Query(params): Query<HashMap<String, String>>) -> Reply {
    let orders = accounts.store.all_orders(limit(&params)?).await?;
    Ok(Json(json!({ "orders": orders.iter().map(order_json).collect::<Vec<_>>() })))
}

/// Tickers in use: each symbol's rules and positions.
async fn symbols(State(accounts): Api, _admin: Admin) -> Reply {
    let refs = accounts.store.symbol_refcounts().await?;
    let symbols: Vec<Value> =
        refs.iter().map(|r| json!({ "symbol": r.symbol, "rules": r.rules, "positions": r.positions })).collect();
    Ok(Json(json!({ "symbols": symbols })))
}

/// The latest quote of every tracked symbol.
async fn quotes(State(accounts): Api, _admin: Admin) -> Reply {
    let quotes: Vec<Value> = accounts
        .snapshots
        .all()
        .await
        .iter()
        .map(|q| {
            json!({
                "symbol": q.symbol,
                "price": q.price,
                "timestamp": time::rfc3339(&q.ts),
                "source": q.source,
                "ingested_at": time::rfc3339(&q.ingested_at),
            })
        })
        .collect();
    Ok(Json(json!({ "quotes": quotes })))
}

/// `DELETE /admin/quotes?older_than=<seconds>` (seed): deletes quotes whose
/// source time is older than that, now, as retention would.
async fn delete_quotes(
    State(accounts): Api,
    Admin(admin): Admin,
    Query(params): Query<HashMap<String, String>>,
) -> Reply {
    let older_than = params
        .get("older_than")
        .and_then(|text| text.parse::<u32>().ok())
        .filter(|seconds| *seconds >= 1)
        .ok_or_else(|| ApiError::invalid("older_than", "must be a whole number of seconds, at least 1"))?;
    let cutoff = chrono::Utc::now() - chrono::Duration::seconds(i64::from(older_than));
    let deleted =
        crate::retention::delete_old(&*accounts.quotes, &accounts.metrics, cutoff).await.map_err(|error| {
            tracing::warn!(%error, "deleting old quotes failed");
            ApiError::Unavailable("the quote store is temporarily unavailable".into())
        })?;
    tracing::info!(admin = %admin.id, older_than, deleted, "old quotes deleted by an admin");
    Ok(Json(json!({ "deleted": deleted, "older_than": older_than, "cutoff": time::rfc3339(&cutoff) })))
}

/// Longest body shown of a dead letter.
const SHOWN_BODY: usize = 4096;

/// `GET /admin/dead-letters?limit=N`: how many messages wait in `dead`
/// (quotes the database refused, unreadable messages, failed
/// notifications) and the first `limit` of them, left in the queue.
async fn dead_letters(State(accounts): Api, _admin: Admin, Query(params): Query<HashMap<String, String>>) -> Reply {
    let limit = u16::try_from(limit(&params)?).unwrap_or(u16::MAX);
    let (waiting, messages) = broker::peek(accounts.broker.as_ref(), DEAD_QUEUE, limit).await.map_err(|error| {
        tracing::warn!(%error, "reading the dead-letter queue failed");
        ApiError::Unavailable("the broker is temporarily unavailable".into())
    })?;
    let messages: Vec<Value> = messages
        .iter()
        .map(|message| {
            let body = serde_json::from_slice::<Value>(&message.body).unwrap_or_else(|_| {
                let text = String::from_utf8_lossy(&message.body);
                Value::String(text.chars().take(SHOWN_BODY).collect())
            });
            json!({
                "routing_key": message.routing_key,
                "bytes": message.body.len(),
                "redelivered": message.redelivered,
                "body": body,
            })
        })
        .collect();
    Ok(Json(json!({ "queue": DEAD_QUEUE, "waiting": waiting, "messages": messages })))
}
