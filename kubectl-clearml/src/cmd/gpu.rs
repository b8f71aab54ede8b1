//! `kubectl clearml gpu report --max N | --off`: SetGpuReporting (the values'
//! `dashboardReportMaxGpu`).

use std::io::{self, Write};

use clearml_agent_proto::v1::{GpuReporting, SetGpuReportingRequest};
use serde::Serialize;

use super::rpc_error;
use crate::{
    cli::GpuReportArgs,
    connect::Ctx,
    output::{self, Tabular},
};

/// Runs `gpu report`.
pub async fn run(args: GpuReportArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let mut agent = ctx.agent().await?;
    let resp = agent
        .set_gpu_reporting(to_request(&args))
        .await
        .map_err(rpc_error)?
        .into_inner();
    output::print(&to_view(resp), ctx.global.output)?;
    Ok(())
}

/// GPU reporting as the agent now has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuReportingView {
    /// GPUs reported; `None` when off.
    pub max_gpus: Option<u32>,
}

/// The request for the flags (`--off` clears, `--max N` sets).
pub fn to_request(args: &GpuReportArgs) -> SetGpuReportingRequest {
    SetGpuReportingRequest {
        max_gpus: if args.off { None } else { args.max },
    }
}

/// Converts the proto answer.
pub fn to_view(g: GpuReporting) -> GpuReportingView {
    GpuReportingView {
        max_gpus: g.max_gpus,
    }
}

impl Tabular for GpuReportingView {
    fn write_table(&self, _wide: bool, out: &mut dyn Write) -> io::Result<()> {
        match self.max_gpus {
            Some(n) => writeln!(out, "GPU reporting: {n} GPUs"),
            None => writeln!(out, "GPU reporting: off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::OutputFormat;

    #[test]
    fn flags_map_to_set_or_clear() {
        let max = GpuReportArgs {
            max: Some(8),
            off: false,
        };
        assert_eq!(to_request(&max).max_gpus, Some(8));
        let off = GpuReportArgs {
            max: None,
            off: true,
        };
        assert_eq!(to_request(&off).max_gpus, None);
    }

    #[test]
    fn view_prints_count_or_off() {
        let render = |v: &GpuReportingView, fmt| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            output::render(v, fmt, &mut out, &mut err).expect("render");
            String::from_utf8(out).expect("utf8")
        };
        let on = to_view(GpuReporting { max_gpus: Some(4) });
        assert_eq!(render(&on, OutputFormat::Table), "GPU reporting: 4 GPUs\n");
        assert_eq!(
            render(
                &to_view(GpuReporting { max_gpus: None }),
                OutputFormat::Table
            ),
            "GPU reporting: off\n"
        );
        assert_eq!(render(&on, OutputFormat::Yaml), "max_gpus: 4\n");
    }
}
