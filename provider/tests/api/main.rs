//! Provider behaviour seen from a client: the WebSocket protocol (SPEC §6),
//! sessions, REST and persistence.

mod helpers;
mod persistence;
mod protocol;
mod rest;
mod streaming;
