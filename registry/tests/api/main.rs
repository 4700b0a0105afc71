//! The registry's HTTP contract, exercised over real HTTP.

mod auth;
mod discovery;
mod health;
mod helpers;
mod lifecycle;
mod lookup;
mod register;
mod slos;
