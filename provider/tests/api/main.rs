//! Provider behaviour seen from a client: the WebSocket protocol,
//! sessions, REST and persistence.

mod accounts;
mod alerts;
mod bad_input;
mod grpc;
mod helpers;
mod persistence;
mod portfolio;
mod protocol;
mod rest;
mod retention;
mod streaming;
mod workers;
