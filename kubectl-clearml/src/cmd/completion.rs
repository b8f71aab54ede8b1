//! `kubectl clearml completion bash|zsh|fish`: shell completion scripts from the clap definition.

use std::io::Write;

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionArgs, CompletionShell};

/// Writes the completion script to stdout.
pub fn run(args: CompletionArgs) -> anyhow::Result<()> {
    // NB: clap_complete panics on write errors; render to memory, then write (a closed pipe is
    // then an ordinary error).
    let mut script = Vec::new();
    write(args.shell, &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// Writes the script for `shell` (for the `kubectl-clearml` binary name, which kubectl runs).
pub fn write(shell: CompletionShell, out: &mut dyn Write) {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "kubectl-clearml", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let mut out = Vec::new();
            write(shell, &mut out);
            let text = String::from_utf8(out).expect("utf8");
            for word in ["install", "queues", "describe"] {
                assert!(text.contains(word), "{shell:?} lacks {word}");
            }
        }
    }
}
