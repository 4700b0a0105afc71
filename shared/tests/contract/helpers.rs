//! Small tools every contract suite uses: unique names, so the suites can
//! share one real server, and waits bounded by a deadline.

pub use lizards_testkit::{DEADLINE, eventually, real_url, unique, within};
