//! The one Lizards binary: wires the service crates into roles (`--target`)
//! and hosts the benchmark command and the terminal client.

pub mod bench;
pub mod client;
pub mod platform;
