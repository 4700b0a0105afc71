//! SQLite adapter of the accounts port.
