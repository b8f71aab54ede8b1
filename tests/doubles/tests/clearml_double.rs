//! Integration tests of the ClearML API server double over real HTTP (reqwest), plus the fidelity
//! test that drives it with the official Python SDK (clearml==2.1.12). One test binary; the tests
//! are grouped in submodules by service.

mod clearml_double {
    mod batch;
    pub mod common;
    mod faults;
    mod queues;
    mod releases;
    mod sdk;
    mod tasks;
    mod transport;
    mod workers;
}
