//! One module per command; [`run`] dispatches. Each command does its I/O, turns the answer into a
//! view (plain data, pure `to_view` functions tested without a server) and hands it to
//! [`crate::output`].

pub mod cluster;
pub mod completion;
pub mod describe;
pub mod doctor;
pub mod gpu;
pub mod install;
pub mod logs;
pub mod queue_spec;
pub mod queues;
pub mod status;
pub mod tasks;
pub mod uninstall;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use tonic::Code;

use crate::{
    cli::{Cli, Command, DescribeCommand, GpuCommand},
    connect::Ctx,
};

/// Runs one command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    let ctx = Ctx::new(global);
    match command {
        Command::Install(args) => install::run(args, &ctx).await,
        Command::Uninstall(args) => uninstall::run(args, &ctx).await,
        Command::Queues(command) => queues::run(*command, &ctx).await,
        Command::Gpu(GpuCommand::Report(args)) => gpu::run(args, &ctx).await,
        Command::Status => status::run(&ctx).await,
        Command::Tasks(args) => tasks::run(args, &ctx).await,
        Command::Describe(DescribeCommand::Task { id }) => describe::run(&id, &ctx).await,
        Command::Logs(args) => logs::run(args, &ctx).await,
        Command::Doctor(args) => doctor::run(args, &ctx).await,
        Command::Completion(args) => completion::run(args),
    }
}

/// A gRPC error as the user should read it. The agent's InvalidArgument messages start with the
/// failing field path, so they are shown as they are.
pub fn rpc_error(status: tonic::Status) -> anyhow::Error {
    let message = status.message();
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Aborted => anyhow!("{message}"),
        // NB: the agent answers Unavailable when ClearML or the API server is unreachable from
        // it; tonic uses it for a broken connection. The message says which.
        Code::Unavailable => anyhow!("unavailable: {message}"),
        Code::DeadlineExceeded => anyhow!("the agent did not answer in time: {message}"),
        Code::Unimplemented => anyhow!(
            "the agent does not support this call (is it older than this plugin?): {message}"
        ),
        code => anyhow!("agent error ({code:?}): {message}"),
    }
}

/// A proto timestamp as a UTC time (`None` when unset or out of range).
pub fn to_time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// kubectl's age of `then` at `now`, or `<unknown>`.
pub fn age(then: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match then {
        Some(t) => crate::output::format_age((now - t).num_seconds()),
        None => "<unknown>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_is_shown_as_the_agents_message() {
        let msg = "agentk8sglue.queues.q.templateOverrides.resources.limits.memory: invalid quantity \"12 GiB\"";
        let err = rpc_error(tonic::Status::invalid_argument(msg));
        assert_eq!(err.to_string(), msg);
        let err = rpc_error(tonic::Status::internal("boom"));
        assert_eq!(err.to_string(), "agent error (Internal): boom");
    }

    #[test]
    fn timestamps_convert_and_age() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        let then = to_time(Some(&ts)).expect("in range");
        let now = then + chrono::Duration::seconds(310);
        assert_eq!(age(Some(then), now), "5m10s");
        assert_eq!(age(None, now), "<unknown>");
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(to_time(Some(&bad)), None);
    }
}
