//! The task container's command: a POSIX `sh` script that gives a task what the Python glue's
//! container script gives it, on the images users run tasks on (`nvidia/cuda:*-runtime-*` has no
//! python, `python:*-slim` no git), then runs it.
//!
//! In order, each step only when needed:
//! 1. find python: `$LOCAL_PYTHON` if set, else the newest `python3.N` that has pip, else
//!    `python3` (the glue's choice);
//! 2. install what is missing — `git`, `python3`, pip (only when `clearml-agent` must be
//!    installed) — with the image's package manager (`apt-get`, `dnf`, `microdnf`, `yum`, `apk`),
//!    in one command, noted on stderr; if that fails, once more without `git`. `airGappedSupport`
//!    or `CLEARML_AGENT_SKIP_CONTAINER_APT` turns these installs off;
//! 3. git still missing: a warning (a task without a repository does not need it); python still
//!    missing: fatal;
//! 4. `customBashScript` (where the glue runs its `extra_bash_init_cmd`);
//! 5. `clearml-agent`: installed with pip (`clearml-agent<clearmlAgentVersion>`) when missing —
//!    pip missing or failing is fatal; when present, pip is asked to satisfy the same pin (a no-op
//!    when it does) unless `CLEARML_AGENT_NO_UPDATE` is set. On a PEP 668 "externally managed"
//!    python, pip gets `--break-system-packages` when it knows the flag;
//! 6. the task's `setup_shell_script`;
//! 7. `exec python -m clearml_agent execute --full-monitoring --require-queue --id <task>`, so the
//!    pod's exit code is the task's.
//!
//! A fatal step exits 127 with one line naming the tool, on stderr and in the container's
//! termination message file (`$CLEARML_TERMINATION_LOG`, default `/dev/termination-log`, the
//! Kubernetes default `terminationMessagePath`), which the agent copies into the task's failure
//! reason. The hooks and the setup script run under `set -e`; one that fails ends the pod with its
//! exit code and a termination message naming it.
//!
//! `containerCustomBashScript` replaces all of this, as in the Enterprise chart: the glue's
//! placeholders are filled and the result runs with `/bin/bash -c`.

use std::collections::BTreeMap;

use crate::values::{AgentValues, DEFAULT_CLEARML_AGENT_VERSION};

/// The `clearml-agent execute` arguments of the in-pod command (the glue's
/// `K8S_GLUE_DEF_EXEC_AGENT_ARGS` default).
pub const EXECUTE_ARGS: &str = "--full-monitoring --require-queue";

/// The values that shape the task container's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// pip version specifier of `clearml-agent` (`clearmlAgentVersion`).
    pub agent_version: String,
    /// `customBashScript` (empty: none).
    pub custom_bash_script: String,
    /// `containerCustomBashScript` (empty: the default bootstrap).
    pub container_custom_bash_script: String,
    /// `airGappedSupport`: install no OS packages.
    pub skip_package_installs: bool,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            agent_version: DEFAULT_CLEARML_AGENT_VERSION.to_string(),
            custom_bash_script: String::new(),
            container_custom_bash_script: String::new(),
            skip_package_installs: false,
        }
    }
}

impl Bootstrap {
    /// The bootstrap settings of validated values, defaults filled in.
    pub fn from_values(a: &AgentValues) -> Self {
        Self {
            agent_version: a
                .clearml_agent_version
                .clone()
                .unwrap_or_else(|| DEFAULT_CLEARML_AGENT_VERSION.to_string()),
            custom_bash_script: a.custom_bash_script.clone().unwrap_or_default(),
            container_custom_bash_script: a
                .container_custom_bash_script
                .clone()
                .unwrap_or_default(),
            skip_package_installs: a.air_gapped_support.unwrap_or(false),
        }
    }

    /// The pip requirement the bootstrap installs, e.g. `clearml-agent>=1.9,<4`.
    pub fn requirement(&self) -> String {
        format!("clearml-agent{}", self.agent_version.trim())
    }

    /// The container's `command` and its one argument, the script: the default bootstrap under
    /// `/bin/sh -c`, or the filled `containerCustomBashScript` under `/bin/bash -c`.
    pub fn container_command(
        &self,
        task_id: &str,
        setup_shell_script: &str,
    ) -> (Vec<String>, String) {
        if self.container_custom_bash_script.trim().is_empty() {
            (
                vec!["/bin/sh".into(), "-c".into()],
                bootstrap_script(self, setup_shell_script),
            )
        } else {
            (
                vec!["/bin/bash".into(), "-c".into()],
                custom_container_script(self, task_id, setup_shell_script),
            )
        }
    }
}

/// `'text'` for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `containerCustomBashScript` with the glue's placeholders filled: `{task_id}`,
/// `{extra_bash_init_cmd}` (`customBashScript`), `{extra_docker_bash_script}` (the task's
/// setup script), `{default_execution_agent_args}` and `{agent_install_args}` (the quoted
/// `clearmlAgentVersion`, so `clearml-agent{agent_install_args}` is the pinned requirement).
pub fn custom_container_script(b: &Bootstrap, task_id: &str, setup_shell_script: &str) -> String {
    let vars: BTreeMap<&str, String> = [
        ("task_id", task_id.to_string()),
        ("extra_bash_init_cmd", b.custom_bash_script.clone()),
        ("extra_docker_bash_script", setup_shell_script.to_string()),
        ("default_execution_agent_args", EXECUTE_ARGS.to_string()),
        ("agent_install_args", shell_quote(b.agent_version.trim())),
    ]
    .into_iter()
    .collect();
    super::fill_placeholders(&b.container_custom_bash_script, &vars)
}

/// The functions and the first steps of the default bootstrap (steps 1–3); see the module docs.
const PRELUDE: &str = r#"clearml_note() { printf 'clearml bootstrap: %s\n' "$*" >&2; }
clearml_fail() {
  clearml_note "$*"
  printf 'clearml bootstrap: %s' "$*" 2>/dev/null >"$clearml_log" || :
  exit 127
}
clearml_on_exit() {
  clearml_rc=$?
  if [ "$clearml_rc" != 0 ] && [ -n "$clearml_stage" ]; then
    clearml_note "$clearml_stage failed"
    printf 'clearml bootstrap: %s failed' "$clearml_stage" 2>/dev/null >"$clearml_log" || :
  fi
}
clearml_find_python() {
  if [ -n "$clearml_user_python" ]; then
    LOCAL_PYTHON=$(command -v "$clearml_user_python" 2>/dev/null) && return 0
  fi
  for clearml_v in 20 19 18 17 16 15 14 13 12 11 10 9 8 7 6 5; do
    clearml_p=$(command -v "python3.$clearml_v" 2>/dev/null) || continue
    if "$clearml_p" -m pip --version >/dev/null 2>&1; then
      LOCAL_PYTHON=$clearml_p
      return 0
    fi
  done
  LOCAL_PYTHON=$(command -v python3 2>/dev/null) && return 0
  LOCAL_PYTHON=
  return 1
}
clearml_has_pip() { "$LOCAL_PYTHON" -m pip --version >/dev/null 2>&1; }
clearml_check_agent() {
  clearml_agent_python=$LOCAL_PYTHON
  if "$LOCAL_PYTHON" -m clearml_agent --help >/dev/null 2>&1; then clearml_agent=1; else clearml_agent=; fi
}
clearml_want() { clearml_wanted="$clearml_wanted${clearml_wanted:+ }$1"; }
clearml_find_pm() {
  for clearml_pm in apt-get dnf microdnf yum apk; do
    command -v "$clearml_pm" >/dev/null 2>&1 && return 0
  done
  clearml_pm=
  return 1
}
clearml_packages() {
  clearml_pkgs=
  for clearml_t in "$@"; do
    case "$clearml_pm:$clearml_t" in
      apk:pip) clearml_t=py3-pip ;;
      *:pip) clearml_t=python3-pip ;;
    esac
    clearml_pkgs="$clearml_pkgs${clearml_pkgs:+ }$clearml_t"
  done
}
clearml_install() {
  clearml_note "installing $* with $clearml_pm"
  case "$clearml_pm" in
    apt-get)
      if [ -z "$clearml_apt_updated" ]; then
        clearml_apt_updated=1
        apt-get update -q || clearml_note "warning: apt-get update failed (exit $?)"
      fi
      apt-get install -y -q --no-install-recommends "$@" ;;
    dnf) dnf install -y --setopt=install_weak_deps=False "$@" ;;
    microdnf) microdnf install -y --nodocs --setopt=install_weak_deps=0 "$@" ;;
    yum) yum install -y "$@" ;;
    apk) apk add --no-cache "$@" ;;
  esac
}
clearml_install_failed() {
  clearml_why="$clearml_pm could not install $clearml_pkgs (exit $1)"
  clearml_uid=$(id -u 2>/dev/null) || clearml_uid=
  if [ -n "$clearml_uid" ] && [ "$clearml_uid" != 0 ]; then
    clearml_why="$clearml_why; the container runs as uid $clearml_uid and installing packages needs root"
  fi
  clearml_note "$clearml_why"
}
clearml_pip_install() {
  set -- -m pip install --disable-pip-version-check --no-cache-dir "$@"
  if "$LOCAL_PYTHON" -c 'import os, sys, sysconfig; sys.exit(0 if getattr(sys, "base_prefix", sys.prefix) == sys.prefix and os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)' >/dev/null 2>&1; then
    case "$("$LOCAL_PYTHON" -m pip install --help 2>/dev/null)" in
      *--break-system-packages*)
        clearml_note "$LOCAL_PYTHON is externally managed (PEP 668): installing with --break-system-packages"
        set -- "$@" --break-system-packages ;;
    esac
  fi
  "$LOCAL_PYTHON" "$@"
}

export DEBIAN_FRONTEND="${DEBIAN_FRONTEND:-noninteractive}"
clearml_user_python="${LOCAL_PYTHON:-}"
clearml_stage=
clearml_why=
clearml_wanted=
clearml_apt_updated=
command -v git >/dev/null 2>&1 || clearml_want git
if clearml_find_python; then
  clearml_check_agent
  [ -n "$clearml_agent" ] || clearml_has_pip || clearml_want pip
else
  clearml_want python3
  clearml_want pip
fi
if [ -n "$clearml_wanted" ]; then
  if [ -n "$clearml_skip_installs" ]; then
    clearml_why="OS package installs are off (airGappedSupport or CLEARML_AGENT_SKIP_CONTAINER_APT)"
    clearml_note "not installing $clearml_wanted: $clearml_why"
  elif clearml_find_pm; then
    clearml_packages $clearml_wanted
    clearml_install $clearml_pkgs || {
      clearml_install_failed $?
      clearml_required=${clearml_wanted#git}
      clearml_required=${clearml_required# }
      if [ -n "$clearml_required" ] && [ "$clearml_required" != "$clearml_wanted" ]; then
        clearml_packages $clearml_required
        clearml_install $clearml_pkgs || clearml_install_failed $?
      fi
    }
  else
    clearml_why="the image has no package manager (apt-get, dnf, microdnf, yum or apk)"
  fi
  clearml_why=${clearml_why:-$clearml_pm installed it, yet it is not on PATH}
  clearml_find_python || clearml_fail "python3 is missing and could not be installed: $clearml_why"
fi
command -v git >/dev/null 2>&1 || clearml_note "warning: git is missing and could not be installed ($clearml_why); a task that clones a repository will fail"
export LOCAL_PYTHON
"#;

/// Step 5: `clearml-agent`.
const AGENT: &str = r#"[ "$clearml_agent_python" = "$LOCAL_PYTHON" ] || clearml_check_agent
if [ -n "$clearml_agent" ]; then
  if [ -z "${CLEARML_AGENT_NO_UPDATE:-}" ] && clearml_has_pip; then
    clearml_pip_install --quiet "$clearml_requirement" || clearml_note "warning: pip could not install $clearml_requirement (exit $?); keeping the image's clearml-agent"
  fi
else
  [ -z "${CLEARML_AGENT_NO_UPDATE:-}" ] || clearml_note "CLEARML_AGENT_NO_UPDATE is set, but $LOCAL_PYTHON has no clearml-agent"
  clearml_has_pip || clearml_fail "pip is missing for $LOCAL_PYTHON and could not be installed: ${clearml_why:-no package manager was asked for it}; it is needed to install clearml-agent"
  clearml_note "installing $clearml_requirement with $LOCAL_PYTHON -m pip"
  clearml_pip_install "$clearml_requirement" || clearml_fail "clearml-agent is missing and $LOCAL_PYTHON -m pip could not install $clearml_requirement (exit $?)"
  clearml_check_agent
  [ -n "$clearml_agent" ] || clearml_fail "clearml-agent is missing: $LOCAL_PYTHON cannot run it after pip installed $clearml_requirement"
fi
"#;

/// The default bootstrap: a POSIX `sh` script (see the module docs) ending in
/// `exec … -m clearml_agent execute --full-monitoring --require-queue --id "$CLEARML_TASK_ID"`.
pub fn bootstrap_script(b: &Bootstrap, setup_shell_script: &str) -> String {
    let mut s = String::from(
        "# clearml task bootstrap (POSIX sh): installs what the task needs when the image lacks it, then runs it\n",
    );
    s.push_str("clearml_log=\"${CLEARML_TERMINATION_LOG:-/dev/termination-log}\"\n");
    s.push_str(&format!(
        "clearml_requirement={}\n",
        shell_quote(&b.requirement())
    ));
    if b.skip_package_installs {
        s.push_str("clearml_skip_installs=1\n");
    } else {
        s.push_str("clearml_skip_installs=\"${CLEARML_AGENT_SKIP_CONTAINER_APT:-}\"\n");
    }
    s.push_str(PRELUDE);
    let hooks = [
        (
            "the chart's customBashScript",
            b.custom_bash_script.as_str(),
        ),
        ("the task's setup_shell_script", setup_shell_script),
    ];
    let any_hook = hooks.iter().any(|(_, h)| !h.trim().is_empty());
    if any_hook {
        s.push_str("trap clearml_on_exit EXIT\nset -e\n");
    }
    for (i, (stage, hook)) in hooks.iter().enumerate() {
        if i == 1 {
            s.push_str(AGENT);
        }
        if hook.trim().is_empty() {
            continue;
        }
        s.push_str(&format!("clearml_stage=\"{stage}\"\n"));
        s.push_str(hook.trim_end());
        s.push_str("\nclearml_stage=\n");
    }
    if any_hook {
        s.push_str("trap - EXIT\n");
    }
    s.push_str(
        "exec \"$LOCAL_PYTHON\" -m clearml_agent execute --full-monitoring --require-queue --id \"$CLEARML_TASK_ID\"\n",
    );
    s
}
