//! The ingestion service: the store → validate → publish pipeline
//! on the embedded adapters, and the whole service over real HTTP.

mod helpers;
mod ingest;
mod polling;
mod process;
mod service;
mod sources;
