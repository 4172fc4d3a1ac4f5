//! commbench's load generator: many simulated clients per pattern, an open-loop publisher, honest
//! recording (HDR histograms, socket byte counts, loss by sequence number) and result files.

pub mod agent;
pub mod capacity;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod collector;
pub mod fleet;
pub mod floor;
pub mod health;
pub mod http;
pub mod http_stream;
pub mod net;
pub mod ordinals;
pub mod output;
pub mod pattern;
pub mod pin;
pub mod priority;
pub mod procs;
pub mod procstat;
pub mod profile;
pub mod progress;
pub mod publisher;
pub mod record;
pub mod report;
pub mod result;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod session;
pub mod study;
pub mod target;
pub mod threshold;
pub mod wire;
pub mod worker;
