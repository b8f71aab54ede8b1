//! The benchmark: our agent against the official Python k8s glue on the same work, against the
//! in-memory ClearML and Kubernetes doubles (see `clearml_e2e::bench`).
//!
//! ```text
//! cargo run --release -p clearml-e2e --bin bench -- [--quick] [--scenario burst,burst-slow-clearml,steady,idle,scale,status]
//!     [--json out.json] [--no-python] [--keep] [--tasks N] [--queues Q] [--rate R] [--duration S]
//!     [--idle-queues Q] [--idle-secs S] [--pods N] [--start-delay-ms MS] [--run-for-ms MS]
//!     [--glue-drain-secs S]
//! ```
//!
//! Prints a Markdown table on stdout (progress on stderr) and writes the JSON report
//! (default `target/bench/bench.json`, `bench-quick.json` with `--quick`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use clearml_e2e::bench::{self, Options, Scenario, Sizes, glue};

const USAGE: &str = "usage: bench [--quick] [--scenario burst,burst-slow-clearml,steady,idle,scale,status] \
[--json FILE] [--no-python] [--keep] [--tasks N] [--queues Q] [--rate R] [--duration S] \
[--idle-queues Q] [--idle-secs S] [--pods N] [--start-delay-ms MS] [--run-for-ms MS] \
[--glue-drain-secs S]";

struct Args {
    options: Options,
    json: PathBuf,
    keep: bool,
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: Option<String>) -> anyhow::Result<T> {
    let value = value.with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
    value
        .parse()
        .ok()
        .with_context(|| format!("{flag}: {value:?} is not a number"))
}

fn parse_args() -> anyhow::Result<Args> {
    let root = bench::workspace_root();
    let mut args = std::env::args().skip(1).collect::<Vec<_>>().into_iter();
    let all: Vec<String> = args.clone().collect();
    let quick = all.iter().any(|a| a == "--quick");
    let mut sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let mut scenarios = Scenario::ALL.to_vec();
    let mut json = None;
    let mut python = true;
    let mut keep = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {}
            "--no-python" => python = false,
            "--keep" => keep = true,
            "--json" => json = Some(PathBuf::from(args.next().context("--json needs a file")?)),
            "--scenario" | "--scenarios" => {
                let list = args.next().context("--scenario needs a list")?;
                scenarios = list
                    .split(',')
                    .map(|s| {
                        Scenario::parse(s.trim())
                            .with_context(|| format!("unknown scenario {s:?}\n{USAGE}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--tasks" => sizes.burst_tasks = parse_num(&arg, args.next())?,
            "--queues" => {
                let q: usize = parse_num(&arg, args.next())?;
                sizes.burst_queues = q;
                sizes.steady_queues = q;
            }
            "--rate" => sizes.steady_rate = parse_num(&arg, args.next())?,
            "--duration" => sizes.steady_secs = parse_num(&arg, args.next())?,
            "--idle-queues" => sizes.idle_queues = parse_num(&arg, args.next())?,
            "--idle-secs" => sizes.idle_secs = parse_num(&arg, args.next())?,
            "--pods" => sizes.scale_pods = parse_num(&arg, args.next())?,
            "--start-delay-ms" => sizes.start_delay_ms = parse_num(&arg, args.next())?,
            "--run-for-ms" => sizes.run_for_ms = parse_num(&arg, args.next())?,
            "--glue-drain-secs" => sizes.glue_drain_secs = parse_num(&arg, args.next())?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if sizes.steady_rate <= 0.0 || sizes.burst_queues == 0 || sizes.idle_queues == 0 {
        bail!("--rate, --queues and --idle-queues must be positive");
    }
    let glue_python = if python {
        eprintln!("== preparing the Python glue venv (tests/scripts/ensure-venv.sh glue)");
        Some(glue::ensure_python().context(
            "the Python glue venv could not be prepared (needs python3 and PyPI); \
             run with --no-python to benchmark the agent alone",
        )?)
    } else {
        None
    };
    let work_dir = root.join(format!("target/bench/work-{}", std::process::id()));
    let json = json.unwrap_or_else(|| {
        root.join(if quick {
            "target/bench/bench-quick.json"
        } else {
            "target/bench/bench.json"
        })
    });
    Ok(Args {
        options: Options {
            quick,
            scenarios,
            glue_python,
            sizes,
            work_dir,
        },
        json,
        keep,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let work_dir = args.options.work_dir.clone();
    let result = async {
        std::fs::create_dir_all(&work_dir)?;
        let report = bench::run(&args.options).await?;
        println!("{}", report.table());
        report.write_json(&args.json)?;
        eprintln!("JSON report: {}", args.json.display());
        anyhow::Ok(())
    }
    .await;
    if args.keep {
        eprintln!("logs kept in {}", work_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            if !args.keep {
                eprintln!("(rerun with --keep to keep the agent's and the glue's logs)");
            }
            ExitCode::FAILURE
        }
    }
}
