//! The request log: one record per HTTP request the double answered, with the API verb and
//! resource the real server's authorizer would see (used to compare an RBAC Role with the
//! calls a client made, and to count calls).

use std::collections::HashMap;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    /// Decoded query parameters.
    pub params: HashMap<String, String>,
    /// API verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`); for non-resource paths the lower-cased method (`get`).
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// Resource plural (`pods`); empty for non-resource paths.
    pub resource: String,
    /// Subresource (`status`, `log`), or empty.
    pub subresource: String,
    /// Namespace, or empty.
    pub namespace: String,
    /// Object name, or empty.
    pub name: String,
    /// HTTP status code answered.
    pub status: u16,
    /// `User-Agent` header.
    pub user_agent: String,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl RequestRecord {
    /// Whether this was a resource request for `resource` (`pods`, `pods/status`) with `verb`.
    pub fn is(&self, verb: &str, resource: &str) -> bool {
        let full = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        self.verb == verb && full == resource
    }
}
