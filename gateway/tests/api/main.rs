//! The gateway spawned on port 0 in front of a real registry and fake
//! upstream instances, driven over real HTTP and WebSocket; rate limits and
//! the response cache live in real Redis when `REDIS_URL` is set (CI).

mod balancing;
mod cache;
mod edge;
mod helpers;
mod ratelimit;
