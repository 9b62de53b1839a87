//! edgeforge-report: what a run measured, as a versioned JSON schema and as Markdown, and the comparison of
//! two reports against CI gates.

pub mod compare;
pub mod markdown;
pub mod schema;
pub mod summarize;

pub use compare::{compare, Comparison, GateSpec};
pub use schema::*;
