//! The only module that touches `serde_yaml` (archived upstream): swapping the YAML library is a
//! change to this file alone.

use serde::{Deserialize as _, Serialize, de::DeserializeOwned};

/// A YAML document could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(String);

/// Parses one YAML document into `T` (for values files: `serde_json::Value`, then the typed schema).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| YamlError(e.to_string()))
}

/// Parses a stream of `---`-separated YAML documents, skipping empty ones.
pub fn from_str_multi<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, YamlError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| YamlError(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        out.push(serde_yaml::from_value(value).map_err(|e| YamlError(e.to_string()))?);
    }
    Ok(out)
}

/// Serialises `value` as a YAML document (no leading `---`).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_yaml::to_string(value).map_err(|e| YamlError(e.to_string()))
}
