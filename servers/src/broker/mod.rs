//! Private broker processes for tests and the load generator: a RabbitMQ node (`rabbitmq.rs`) and a
//! Kafka-compatible `tansu` broker (`tansu.rs`), each on free loopback ports with a directory of its
//! own, stopped by PID; and what launchers share (`process.rs`). The `redis-server` launcher lives
//! with the rest of the Redis plumbing in `redis/server.rs`.

pub(crate) mod process;
pub mod rabbitmq;
pub mod tansu;

pub use process::BrokerError;

/// The install command every "not installed" message names.
pub const INSTALL_SCRIPT: &str = "scripts/install-test-deps.sh";
