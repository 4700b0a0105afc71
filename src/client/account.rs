//! `register`, `login`, `logout`: the token is kept for the next commands.

use serde_json::json;

use super::{
    Client, SignIn,
    api::ClientError,
    credentials::{self, Credentials},
};

impl Client {
    pub(super) async fn register(&mut self, sign_in: SignIn) -> Result<(), ClientError> {
        let (email, password) = self.ask_credentials(sign_in).await?;
        let body = json!({ "email": email, "password": password });
        let user = self.api.post("/auth/register", body, false).await?;
        println!("Registered {}.", user["email"].as_str().unwrap_or(&email));
        self.sign_in(&email, &password).await
    }

    pub(super) async fn login(&mut self, sign_in: SignIn) -> Result<(), ClientError> {
        let (email, password) = self.ask_credentials(sign_in).await?;
        self.sign_in(&email, &password).await
    }

    pub(super) fn logout(&mut self) -> Result<(), ClientError> {
        self.api.credentials = None;
        if credentials::forget(&self.dir)? {
            println!("Signed out.");
        } else {
            println!("Not signed in.");
        }
        Ok(())
    }

    async fn sign_in(&mut self, email: &str, password: &str) -> Result<(), ClientError> {
        let token = self.api.post("/auth/login", json!({ "email": email, "password": password }), false).await?;
        let Some(access_token) = token["access_token"].as_str() else {
            return Err(ClientError::Unexpected { path: "/auth/login".into(), reason: "no access_token".into() });
        };
        let saved = Credentials {
            url: self.api.base.clone(),
            email: email.trim().to_lowercase(),
            access_token: access_token.into(),
        };
        credentials::save(&self.dir, &saved)?;
        let minutes = token["expires_in"].as_u64().unwrap_or_default() / 60;
        println!("Signed in as {} for {minutes} min (kept in {}).", saved.email, self.dir.display());
        self.api.credentials = Some(saved);
        Ok(())
    }

    async fn ask_credentials(&mut self, sign_in: SignIn) -> Result<(String, String), ClientError> {
        let email = match sign_in.email {
            Some(email) => email,
            None => self.prompt.ask("E-mail: ").await.ok_or_else(|| ClientError::Input("no e-mail given".into()))?,
        };
        let password = match sign_in.password {
            Some(password) => password,
            None => {
                self.prompt.secret("Password: ").await.ok_or_else(|| ClientError::Input("no password given".into()))?
            }
        };
        Ok((email, password))
    }
}
