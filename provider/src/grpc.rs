//! `lizards.v1.Accounts`, the gRPC twin of the accounts REST API for
//! seed-style clients: every call runs the same [`Accounts`] operation as
//! its REST route, so both give the same answers and errors.

use std::sync::Arc;

use lizards_shared::{
    Symbol,
    accounts::{Rule, User},
    jwt::Role,
    shutdown::Shutdown,
    time,
};
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

use crate::{
    accounts::{
        Accounts,
        users::{ChatId, Registration, UserChanges},
    },
    error::ApiError,
    rest::{DEFAULT_MEAN, MAX_MEAN},
};

/// Code generated from `proto/accounts.proto`: messages, server and client.
pub mod proto {
    tonic::include_proto!("lizards.v1");
}

use proto::accounts_server::{Accounts as AccountsRpc, AccountsServer};

pub struct AccountsService {
    accounts: Arc<Accounts>,
}

fn status(error: ApiError) -> Status {
    error.grpc()
}

fn rule_message(rule: &Rule) -> proto::Rule {
    proto::Rule {
        id: rule.id.0,
        symbol: rule.spec.symbol.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        kind: rule.spec.kind.as_str().to_string(),
        threshold: rule.spec.threshold,
    }
}

fn user_message(user: &User, rules: &[Rule]) -> proto::User {
    proto::User {
        id: user.id.0,
        email: user.email.to_string(),
        role: match user.role {
            Role::User => "user".into(),
            Role::Admin => "admin".into(),
        },
        created_at: time::rfc3339(&user.created_at),
        email_notifications: user.targets.email,
        webhook_url: user.targets.webhook_url.clone(),
        telegram_chat_id: user.targets.telegram_chat_id,
        min_notification_interval: user.min_notification_interval,
        rules: rules.iter().map(rule_message).collect(),
    }
}

impl AccountsService {
    /// The caller named by the `authorization: Bearer` metadata.
    async fn caller<T>(&self, request: &Request<T>) -> Result<User, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string())
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        self.accounts.authenticate(&token).await.map_err(status)
    }
}

#[tonic::async_trait]
impl AccountsRpc for AccountsService {
    async fn register(&self, request: Request<proto::RegisterRequest>) -> Result<Response<proto::User>, Status> {
        let r = request.into_inner();
        let registration = Registration {
            email: r.email,
            password: r.password,
            ticker: r.ticker,
            high_value: r.high_value,
            low_value: r.low_value,
            telegram_chat_id: r.telegram_chat_id.map(ChatId),
            webhook_url: r.webhook_url,
            webhook_secret: None,
        };
        let registered = self.accounts.register(registration).await.map_err(status)?;
        let (user, rules) = (registered.user, registered.rules);
        Ok(Response::new(user_message(&user, &rules)))
    }

    async fn login(&self, request: Request<proto::LoginRequest>) -> Result<Response<proto::Token>, Status> {
        let r = request.into_inner();
        let token = self.accounts.login(&r.email, &r.password).await.map_err(status)?;
        Ok(Response::new(proto::Token {
            access_token: token.access_token,
            token_type: "Bearer".into(),
            expires_in: token.expires_in,
        }))
    }

    async fn update_user(&self, request: Request<proto::UpdateUserRequest>) -> Result<Response<proto::User>, Status> {
        let user = self.caller(&request).await?;
        let r = request.into_inner();
        let changes = UserChanges {
            email: r.email,
            password: r.password,
            current_password: r.current_password,
            email_notifications: r.email_notifications,
            // Protobuf cannot send null: an empty URL clears it.
            webhook_url: r.webhook_url.map(|url| Some(url).filter(|u| !u.is_empty())),
            webhook_secret: None,
            telegram_chat_id: r.telegram_chat_id.map(|chat| Some(ChatId(chat))),
            min_notification_interval: r.min_notification_interval,
            role: None,
        };
        let user = self.accounts.update_own(&user, changes).await.map_err(status)?;
        Ok(Response::new(user_message(&user, &[])))
    }

    async fn delete_user(
        &self,
        request: Request<proto::DeleteUserRequest>,
    ) -> Result<Response<proto::DeleteUserReply>, Status> {
        let user = self.caller(&request).await?;
        self.accounts.delete(user.id).await.map_err(status)?;
        Ok(Response::new(proto::DeleteUserReply { deleted: true }))
    }

    async fn latest_value(
        &self,
        request: Request<proto::LatestValueRequest>,
    ) -> Result<Response<proto::Quote>, Status> {
        let symbol =
            Symbol::parse(&request.into_inner().symbol).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let quote =
            self.accounts.latest(&symbol).await.ok_or_else(|| Status::not_found(format!("no quote for {symbol}")))?;
        Ok(Response::new(proto::Quote {
            symbol: quote.symbol.to_string(),
            price: quote.price,
            timestamp: time::rfc3339(&quote.ts),
            volume: quote.volume,
            source: quote.source.clone(),
        }))
    }

    async fn mean_of_last(&self, request: Request<proto::MeanOfLastRequest>) -> Result<Response<proto::Mean>, Status> {
        let r = request.into_inner();
        let symbol = Symbol::parse(&r.symbol).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let last = if r.last == 0 { DEFAULT_MEAN } else { r.last };
        if last > MAX_MEAN {
            return Err(Status::invalid_argument(format!("'last' must be an integer from 1 to {MAX_MEAN}")));
        }
        let mean = self.accounts.quotes.mean_of_last(&symbol, last).await.map_err(|error| {
            tracing::warn!(%error, "database query failed");
            Status::unavailable("history is temporarily unavailable")
        })?;
        let mean = mean.ok_or_else(|| Status::not_found(format!("no quotes for {symbol}")))?;
        Ok(Response::new(proto::Mean { symbol: symbol.to_string(), mean: mean.mean, count: mean.count, last }))
    }

    async fn list_users(&self, request: Request<proto::ListUsersRequest>) -> Result<Response<proto::UserList>, Status> {
        let user = self.caller(&request).await?;
        if user.role != Role::Admin {
            return Err(status(ApiError::Forbidden("this needs the admin role".into())));
        }
        let users = self.accounts.store.users().await.map_err(|e| status(e.into()))?;
        Ok(Response::new(proto::UserList { users: users.iter().map(|u| user_message(u, &[])).collect() }))
    }
}

/// Serves the service on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    accounts: Arc<Accounts>,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(AccountsServer::new(AccountsService { accounts }))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
