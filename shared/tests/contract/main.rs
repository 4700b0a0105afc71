//! Contract suites of the ports in `lizards-shared`, one module per port.
//! Each check is a `pub async fn` taking the port as a trait object, so the
//! real adapters (RabbitMQ, MongoDB, Redis, PostgreSQL) run the very same
//! checks; the `embedded` module of each suite runs them on the in-process
//! adapter.

mod accounts;
mod broker;
mod cache;
mod helpers;
mod rawstore;
mod slo;
mod store;
