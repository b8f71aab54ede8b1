//! The gRPC edge of the control API (`clearml.agent.v1.AgentService`) served to `kubectl clearml`,
//! plus the standard `grpc.health.v1`. Served on 127.0.0.1 by default, so only users allowed to
//! port-forward to the agent's pod reach it. Each method unpacks its request, calls
//! [`crate::control`], and maps a [`ControlError`] to its status: `tonic::Status` lives only here.

use std::{net::SocketAddr, sync::Arc};

use clearml_agent_proto::v1::{
    self as pb,
    agent_service_server::{AgentService, AgentServiceServer},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use crate::{
    config_store::StoreError,
    control::{
        Control, ControlError,
        edit::{QueueEdit, parse_patch, parse_queue_spec},
    },
};

/// Serves the control API and gRPC health on `addr` until `shutdown`: binds now (so the port is
/// open before the agent reports ready) and returns the server, a task for the
/// [`Supervisor`](crate::runtime::Supervisor); a port that cannot be bound is that task's error.
pub fn serve(
    control: Arc<Control>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let incoming = TcpIncoming::bind(addr)
        .and_then(|incoming| Ok((incoming.local_addr()?, incoming)))
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")));
    async move {
        let (bound, incoming) = incoming?;
        tracing::info!(grpc = %bound, "control API up");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<AgentServiceServer<ControlService>>()
            .await;
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(AgentServiceServer::new(ControlService(control)))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(std::io::Error::other)
    }
}

/// The tonic service.
pub struct ControlService(Arc<Control>);

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::Invalid(_) | ControlError::BadInput(_) => {
                Status::invalid_argument(message)
            }
            ControlError::NotFound(_) => Status::not_found(message),
            ControlError::AlreadyExists(_) => Status::already_exists(message),
            ControlError::FailedPrecondition(_) => Status::failed_precondition(message),
            ControlError::Store(StoreError::Invalid { .. }) => Status::failed_precondition(message),
            ControlError::Store(StoreError::Rejected(m)) => Status::invalid_argument(m),
            ControlError::Store(StoreError::Contended(_)) | ControlError::Contended => {
                Status::aborted(message)
            }
            ControlError::Store(StoreError::Kube { .. }) | ControlError::Unavailable(_) => {
                Status::unavailable(message)
            }
            ControlError::Internal(_) => Status::internal(message),
        }
    }
}

#[tonic::async_trait]
impl AgentService for ControlService {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        Ok(Response::new(self.0.status()))
    }

    async fn list_queues(
        &self,
        _: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let queues = self.0.queues()?;
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }

    async fn get_queue(
        &self,
        req: Request<pb::GetQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        let cfg = self.0.cfg();
        Ok(Response::new(self.0.queue(&req.into_inner().name, &cfg)?))
    }

    async fn add_queue(
        &self,
        req: Request<pb::AddQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        let pb::AddQueueRequest {
            name,
            spec_json,
            dry_run,
        } = req.into_inner();
        let entry = parse_queue_spec(&name, &spec_json)?;
        let edit = QueueEdit::Add {
            name,
            entry: Box::new(entry),
        };
        Ok(Response::new(self.0.save_queue(&edit, dry_run).await?))
    }

    async fn patch_queue(
        &self,
        req: Request<pb::PatchQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        let pb::PatchQueueRequest {
            name,
            patch_type,
            patch,
            dry_run,
        } = req.into_inner();
        let kind = pb::PatchType::try_from(patch_type).unwrap_or(pb::PatchType::Unspecified);
        let patch = parse_patch(kind == pb::PatchType::Json, &patch)?;
        let edit = QueueEdit::Patch { name, patch };
        Ok(Response::new(self.0.save_queue(&edit, dry_run).await?))
    }

    async fn remove_queue(
        &self,
        req: Request<pb::RemoveQueueRequest>,
    ) -> Result<Response<pb::RemoveQueueResponse>, Status> {
        let name = req.into_inner().name;
        self.0.edit(&QueueEdit::Remove { name }, false).await?;
        Ok(Response::new(pb::RemoveQueueResponse {}))
    }

    async fn set_gpu_reporting(
        &self,
        req: Request<pb::SetGpuReportingRequest>,
    ) -> Result<Response<pb::GpuReporting>, Status> {
        let max = req.into_inner().max_gpus;
        self.0.edit(&QueueEdit::GpuReporting(max), false).await?;
        Ok(Response::new(pb::GpuReporting { max_gpus: max }))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let tasks = self.0.tasks(&req.into_inner().queue).await;
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn describe_task(
        &self,
        req: Request<pb::DescribeTaskRequest>,
    ) -> Result<Response<pb::TaskDetail>, Status> {
        Ok(Response::new(self.0.describe(&req.into_inner().id).await?))
    }

    async fn render_pod(
        &self,
        req: Request<pb::RenderPodRequest>,
    ) -> Result<Response<pb::RenderPodResponse>, Status> {
        let pb::RenderPodRequest { queue, task_id } = req.into_inner();
        let manifests_yaml = self.0.render_preview(&queue, &task_id).await?;
        Ok(Response::new(pb::RenderPodResponse { manifests_yaml }))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn control_errors_map_to_their_status_codes_with_the_message() {
        let field = clearml_agent_core::values::Values::from_yaml("agentk8sglue:\n  queus: {}\n")
            .expect_err("typo refused");
        let cases = [
            (ControlError::Invalid(field), Code::InvalidArgument),
            (ControlError::BadInput("bad".into()), Code::InvalidArgument),
            (ControlError::NotFound("gone".into()), Code::NotFound),
            (
                ControlError::AlreadyExists("dup".into()),
                Code::AlreadyExists,
            ),
            (
                ControlError::FailedPrecondition("file".into()),
                Code::FailedPrecondition,
            ),
            (
                ControlError::Store(StoreError::Invalid {
                    name: "cm".into(),
                    message: "x".into(),
                }),
                Code::FailedPrecondition,
            ),
            (
                ControlError::Store(StoreError::Rejected("no".into())),
                Code::InvalidArgument,
            ),
            (
                ControlError::Store(StoreError::Contended("cm".into())),
                Code::Aborted,
            ),
            (ControlError::Contended, Code::Aborted),
            (ControlError::Unavailable("down".into()), Code::Unavailable),
            (ControlError::Internal("bug".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status.message(), text);
        }
    }
}
