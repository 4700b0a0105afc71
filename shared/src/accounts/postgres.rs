//! PostgreSQL adapter of the accounts port.
