//! `commbench capacity`: per pattern (and poll interval), the most clients — or events per second —
//! one server carries while meeting a latency goal with no loss, no errors and a load generator
//! that keeps up. Each step is a normal measured cell; the answer is `capacity.csv`.

pub mod judge;
pub mod limits;
pub mod plan;
pub mod runner;
pub mod search;
pub mod slo;

pub use self::{
    plan::{CapacityArgs, Plan, PlanError, Vary},
    runner::{run, CapacityError, CapacityOutcome},
};
