//! Shared building blocks of Lizards: domain types, the WebSocket wire
//! protocol, configuration, telemetry and the ports (traits) every service
//! depends on, each with its embedded adapter.

pub mod accounts;
pub mod admin;
pub mod broker;
pub mod cache;
pub mod config;
pub mod demand;
pub mod discovery;
pub mod http;
pub mod jwt;
pub mod openapi;
pub mod problem;
pub mod protocol;
pub mod quote;
pub mod rawstore;
pub mod retry;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod slo;
pub mod store;
pub mod supervisor;
pub mod symbol;
pub mod telemetry;
pub mod time;

pub use quote::Quote;
pub use symbol::{Symbol, SymbolError};
