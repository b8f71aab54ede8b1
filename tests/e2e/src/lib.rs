//! End-to-end tests of the agent and the plugin, the demo and the benchmark, all run against the
//! in-memory servers of `clearml-doubles`.
//!
//! - [`agent`]: builds and runs the real agent binary (and the plugin) against the doubles.
//! - [`bench`]: the benchmark of the agent against the official Python glue.
//!
//! The binaries `demo` and `bench` (`src/bin/`) and the tests `agent_e2e` and `bench_quick`
//! (`tests/`) build on these and on [`clearml_doubles`].

pub mod agent;
pub mod bench;
