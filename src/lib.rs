//! The one Lizards binary: wires the service crates into roles (`--target`)
//! and hosts the benchmark command.

pub mod bench;
pub mod platform;
