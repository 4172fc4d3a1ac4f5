//! What the Redis bus and the Redis queue share: the self-recovering connection (`link.rs`), noticing
//! that Redis lost its data (`epoch.rs`), following a pub/sub channel (`pubsub.rs`), the private
//! `redis-server` launcher the tests and the load generator start (`server.rs`), and tidying a shared
//! Redis after a run (`cleanup.rs`).

pub mod cleanup;
pub(crate) mod epoch;
pub(crate) mod link;
pub(crate) mod pubsub;
pub mod server;
