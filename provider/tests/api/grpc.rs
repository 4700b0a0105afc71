//! The gRPC twin `lizards.v1.Accounts` answers as REST does: the same
//! accounts, tokens, quotes, means and errors.

use lizards_provider::grpc::proto::{
    DeleteUserRequest, LatestValueRequest, ListUsersRequest, LoginRequest, MeanOfLastRequest, RegisterRequest,
    UpdateUserRequest, accounts_client::AccountsClient,
};
use tonic::{Code, Request, transport::Channel};

use crate::helpers::{PASSWORD, TestProvider, spawn};

async fn client(provider: &TestProvider) -> AccountsClient<Channel> {
    AccountsClient::connect(format!("http://{}", provider.grpc)).await.expect("gRPC connects")
}

fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    request
}

fn email() -> String {
    format!("{}@example.com", lizards_testkit::unique("grpc"))
}

#[tokio::test]
async fn register_login_update_and_delete_agree_with_rest() {
    let provider = spawn().await;
    let mut grpc = client(&provider).await;
    provider.seed("AAPL", 150.0).await;
    let email = email();
    let request = RegisterRequest {
        email: email.clone(),
        password: PASSWORD.into(),
        ticker: Some("AAPL".into()),
        high_value: Some(200.0),
        telegram_chat_id: Some(42),
        ..RegisterRequest::default()
    };
    let user = grpc.register(request).await.expect("registered").into_inner();
    assert_eq!(user.email, email);
    assert_eq!(user.rules.len(), 1);
    assert_eq!((user.rules[0].kind.as_str(), user.rules[0].threshold), ("above", 200.0));

    // The same account through REST.
    let token =
        grpc.login(LoginRequest { email: email.clone(), password: PASSWORD.into() }).await.unwrap().into_inner();
    assert_eq!((token.token_type.as_str(), token.expires_in), ("Bearer", 3600));
    let me = provider.get_as("/users/me", Some(&token.access_token)).await;
    assert_eq!(me.body["id"], user.id);
    assert_eq!(me.body["created_at"], user.created_at.as_str());
    assert_eq!(me.body["notifications"]["telegram_chat_id"], serde_json::Value::Null, "only the bot links a chat");
    let rules = provider.get_as("/alerts/rules", Some(&token.access_token)).await;
    assert_eq!(rules.body["rules"][0]["id"], user.rules[0].id);

    let duplicate =
        grpc.register(RegisterRequest { email: email.clone(), password: PASSWORD.into(), ..Default::default() }).await;
    assert_eq!(duplicate.unwrap_err().code(), Code::AlreadyExists, "REST says 409");
    let short =
        grpc.register(RegisterRequest { email: self::email(), password: "short".into(), ..Default::default() }).await;
    assert_eq!(short.unwrap_err().code(), Code::InvalidArgument, "REST says 422");
    let wrong = grpc.login(LoginRequest { email: email.clone(), password: "wrong-password".into() }).await;
    assert_eq!(wrong.unwrap_err().code(), Code::Unauthenticated);

    let changes = UpdateUserRequest { min_notification_interval: Some(30), ..Default::default() };
    let updated = grpc.update_user(authorized(changes, &token.access_token)).await.unwrap().into_inner();
    assert_eq!(updated.min_notification_interval, 30);
    assert_eq!(provider.get_as("/users/me", Some(&token.access_token)).await.body["min_notification_interval"], 30);
    let anonymous = grpc.update_user(UpdateUserRequest::default()).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);

    let deleted = grpc.delete_user(authorized(DeleteUserRequest {}, &token.access_token)).await.unwrap().into_inner();
    assert!(deleted.deleted);
    assert_eq!(provider.get_as("/users/me", Some(&token.access_token)).await.status, 401);
    let again = grpc.register(RegisterRequest { email, password: PASSWORD.into(), ..Default::default() }).await;
    assert!(again.is_ok(), "register, delete, register again works");
}

#[tokio::test]
async fn latest_mean_and_list_users_agree_with_rest() {
    let provider = spawn().await;
    let mut grpc = client(&provider).await;
    for price in [10.0, 20.0, 30.0] {
        provider.seed("MSFT", price).await;
    }
    let latest = grpc.latest_value(LatestValueRequest { symbol: "msft".into() }).await.unwrap().into_inner();
    let rest = provider.get_as("/quotes/MSFT", None).await.body;
    assert_eq!(latest.price, rest["price"].as_f64().unwrap());
    assert_eq!(latest.timestamp, rest["timestamp"].as_str().unwrap());

    let mean = grpc.mean_of_last(MeanOfLastRequest { symbol: "MSFT".into(), last: 2 }).await.unwrap().into_inner();
    let rest = provider.get_as("/quotes/MSFT/mean?last=2", None).await.body;
    assert_eq!((mean.mean, mean.count), (rest["mean"].as_f64().unwrap(), 2));
    assert_eq!(mean.mean, 25.0);
    let unknown = grpc.latest_value(LatestValueRequest { symbol: "NOPE".into() }).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
    let invalid = grpc.mean_of_last(MeanOfLastRequest { symbol: "bad symbol!".into(), last: 1 }).await;
    assert_eq!(invalid.unwrap_err().code(), Code::InvalidArgument);
    let too_many = grpc.mean_of_last(MeanOfLastRequest { symbol: "MSFT".into(), last: 10_001 }).await;
    assert_eq!(too_many.unwrap_err().code(), Code::InvalidArgument);

    let user = provider.user().await;
    let admin = provider.admin().await;
    let listed = grpc.list_users(authorized(ListUsersRequest {}, &admin)).await.unwrap().into_inner();
    let rest = provider.get_as("/admin/users", Some(&admin)).await.body;
    let grpc_ids: Vec<i64> = listed.users.iter().map(|u| u.id).collect();
    let rest_ids: Vec<i64> = rest["users"].as_array().unwrap().iter().map(|u| u["id"].as_i64().unwrap()).collect();
    assert_eq!(grpc_ids, rest_ids);
    let refused = grpc.list_users(authorized(ListUsersRequest {}, &user.token)).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied, "REST says 403");
}
