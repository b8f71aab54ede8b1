//! The agent's ConfigMap: the single source of truth of its values. Reads and optimistic-
//! concurrency writes (replace with the read `resourceVersion`, retried on Conflict), and a watch
//! that publishes every valid new version to the dispatcher, so `kubectl edit` works as well as
//! the control API. An invalid edit is logged and reported; the last good config stays in force.

use std::{collections::BTreeMap, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

use clearml_agent_core::{config::AgentConfig, contract::VALUES_KEY, values::Values, yaml};

use crate::k8s::FIELD_MANAGER;
/// Outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written.
    Done,
    /// Someone wrote first: read again and retry.
    Conflict,
}

/// A ConfigMap operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The API server refused or could not be reached.
    #[error("ConfigMap {name}: {source}")]
    Kube {
        /// ConfigMap name.
        name: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The stored document does not parse.
    #[error("ConfigMap {name} key {VALUES_KEY}: {message}")]
    Invalid {
        /// ConfigMap name.
        name: String,
        /// What is wrong (with the field path).
        message: String,
    },
    /// The change was refused by the caller's validation.
    #[error("{0}")]
    Rejected(String),
    /// Too many concurrent writers.
    #[error("ConfigMap {0} kept changing; try again")]
    Contended(String),
}

/// Access to one ConfigMap holding the values.
#[derive(Clone)]
pub struct ConfigStore {
    api: Api<ConfigMap>,
    name: String,
}

impl ConfigStore {
    /// The ConfigMap `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }

    /// ConfigMap name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn kube_err(&self, source: kube::Error) -> StoreError {
        StoreError::Kube {
            name: self.name.clone(),
            source,
        }
    }

    /// Reads and parses the values.
    pub async fn read(&self) -> Result<(Values, ConfigMap), StoreError> {
        let cm = self
            .api
            .get(&self.name)
            .await
            .map_err(|e| self.kube_err(e))?;
        let values = parse(&self.name, &cm)?;
        Ok((values, cm))
    }

    /// Writes `values` (without credentials) into `cm` and replaces it, conditional on the
    /// `resourceVersion` `cm` was read at.
    pub async fn write(&self, mut cm: ConfigMap, values: &Values) -> Result<Written, StoreError> {
        let text = yaml::to_string(&values.without_secrets())
            .map_err(|e| StoreError::Rejected(format!("cannot encode values: {e}")))?;
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert(VALUES_KEY.to_string(), text);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self.api.replace(&self.name, &pp, &cm).await {
            Ok(_) => Ok(Written::Done),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Written::Conflict),
            Err(e) => Err(self.kube_err(e)),
        }
    }

    /// Watches the ConfigMap and sends each valid new config on `tx`; `errors` gets the text of
    /// an invalid version (`None` once a valid one arrives). The watch retries for ever: the
    /// returned future (for the [`Supervisor`](crate::runtime::Supervisor)) never ends by itself.
    pub fn watch(
        &self,
        namespace: String,
        tx: watch::Sender<Arc<AgentConfig>>,
        errors: Arc<std::sync::Mutex<Option<String>>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let store = self.clone();
        async move {
            let config =
                watcher::Config::default().fields(&format!("metadata.name={}", store.name));
            let stream = watcher(store.api.clone(), config)
                .default_backoff()
                .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let cm = match event {
                    Ok(cm) => cm,
                    Err(error) => {
                        tracing::warn!(%error, "ConfigMap watch error; retrying");
                        continue;
                    }
                };
                let parsed = parse(&store.name, &cm).and_then(|v| {
                    AgentConfig::from_values(&v, &namespace).map_err(|e| StoreError::Invalid {
                        name: store.name.clone(),
                        message: e.to_string(),
                    })
                });
                match parsed {
                    Ok(cfg) => {
                        if let Ok(mut slot) = errors.lock() {
                            *slot = None;
                        }
                        if **tx.borrow() != cfg {
                            tracing::info!(queues = cfg.queues.len(), "config changed; applying");
                            tx.send_replace(Arc::new(cfg));
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "ignoring invalid config; the last good one stays in force");
                        if let Ok(mut slot) = errors.lock() {
                            *slot = Some(error.to_string());
                        }
                    }
                }
            }
        }
    }
}

fn parse(name: &str, cm: &ConfigMap) -> Result<Values, StoreError> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(VALUES_KEY))
        .ok_or_else(|| StoreError::Invalid {
            name: name.into(),
            message: format!("no key {VALUES_KEY}"),
        })?;
    // every mistake, in file order (a user fixing an edit sees them all at once)
    Values::from_yaml(text).map_err(|_| StoreError::Invalid {
        name: name.into(),
        message: Values::errors_in_yaml(text)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })
}
