//! The registry's HTTP contract (SPEC §8), exercised over real HTTP.

mod auth;
mod discovery;
mod health;
mod helpers;
mod lifecycle;
mod lookup;
mod register;
mod slos;
