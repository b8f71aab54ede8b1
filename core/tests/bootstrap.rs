//! Runs the task bootstrap script (`render::bootstrap_script`) the way a task container does
//! (`sh -c <script>`) in fake images: a temporary directory whose `bin/` is the whole `PATH`,
//! holding stub executables for the image's tools. Stubs append their arguments to a log; package
//! manager stubs "install" by copying the `git` / `python3` stubs into `bin/`; the `python3` stub
//! answers `-m pip --version`, `-m pip install …`, `-m clearml_agent --help` and
//! `-m clearml_agent execute …` from marker files. Nothing touches the network or the real
//! system: the script sees only the stubs, writes only inside the directory (the termination
//! message goes to `$CLEARML_TERMINATION_LOG`), and each case runs under every POSIX shell found
//! on `PATH` (`/bin/sh`, `dash`, `busybox sh` as on Alpine, `bash --posix` as RHEL's `/bin/sh`).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use clearml_agent_core::{
    render::{Bootstrap, bootstrap_script},
    values::Values,
};

const TASK: &str = "0123456789abcdef0123456789abcdef";

/// The stub of every `python3*`: its name is its basename, its state the marker files
/// `pip.<name>` (pip present), `agent.<name>` (clearml-agent importable), `em.<name>` (externally
/// managed, PEP 668), and the shared `pip-break` (pip knows `--break-system-packages`) and
/// `pip-fails`.
const PYTHON_STUB: &str = r#"me=${0##*/}
if [ "$1" = -c ]; then
  printf '%s -c …\n' "$me" >>"$W/log"
  [ -e "$W/state/em.$me" ]
  exit
fi
{ printf '%s' "$me"; for a in "$@"; do printf ' %s' "$a"; done; printf '\n'; } >>"$W/log"
[ "$1" = -m ] || exit 2
case "$2" in
  pip)
    [ -e "$W/state/pip.$me" ] || { echo "$me: No module named pip" >&2; exit 1; }
    case "$3" in
      --version) echo "pip 24.0 (stub)"; exit 0 ;;
      install)
        case " $* " in
          *" --help "*)
            [ ! -e "$W/state/pip-break" ] || echo "  --break-system-packages  Allow pip to modify an EXTERNALLY-MANAGED Python installation"
            exit 0 ;;
        esac
        if [ -e "$W/state/em.$me" ]; then
          case " $* " in
            *" --break-system-packages "*) ;;
            *) echo "error: externally-managed-environment" >&2; exit 1 ;;
          esac
        fi
        if [ -e "$W/state/pip-fails" ]; then echo "ERROR: No matching distribution found" >&2; exit 1; fi
        : >"$W/state/agent.$me"
        exit 0 ;;
    esac ;;
  clearml_agent)
    [ -e "$W/state/agent.$me" ] || { echo "$me: No module named clearml_agent" >&2; exit 1; }
    case "$3" in
      --help) exit 0 ;;
      execute)
        echo "execute env FROM_SETUP=${FROM_SETUP:-} LOCAL_PYTHON=${LOCAL_PYTHON##*/}" >>"$W/log"
        exit 0 ;;
    esac ;;
esac
exit 2
"#;

/// The stub of every package manager: `update` and `install`/`add`, failing when `pm-fails` is
/// set (no network, not root) or, for `git` only, when `broken-git` is set. Installing `python3`
/// or pip copies the python stub in (pip marks `pip.python3`; `distro-em` marks the new python
/// externally managed).
const PM_STUB: &str = r#"me=${0##*/}
{ printf '%s' "$me"; for a in "$@"; do printf ' %s' "$a"; done
  [ "$me" != apt-get ] || printf ' [DEBIAN_FRONTEND=%s]' "${DEBIAN_FRONTEND:-}"
  printf '\n'; } >>"$W/log"
case "$1" in
  update) [ ! -e "$W/state/pm-fails" ] || { echo "E: Failed to fetch (stub)" >&2; exit 100; }; exit 0 ;;
  install|add) ;;
  *) exit 2 ;;
esac
[ ! -e "$W/state/pm-fails" ] || { echo "E: Unable to locate package (stub)" >&2; exit 100; }
for a in "$@"; do
  if [ "$a" = git ] && [ -e "$W/state/broken-git" ]; then echo "E: Package 'git' has no installation candidate (stub)" >&2; exit 100; fi
done
for a in "$@"; do
  case "$a" in
    git) "$CP" "$W/pkgs/git" "$W/bin/git" ;;
    python3|python3-pip|py3-pip)
      [ -e "$W/bin/python3" ] || "$CP" "$W/pkgs/python3" "$W/bin/python3"
      [ ! -e "$W/state/distro-em" ] || : >"$W/state/em.python3"
      [ "$a" = python3 ] || : >"$W/state/pip.python3" ;;
  esac
done
exit 0
"#;

const GIT_STUB: &str =
    "{ printf 'git'; for a in \"$@\"; do printf ' %s' \"$a\"; done; printf '\\n'; } >>\"$W/log\"\n";

const ID_STUB: &str = "[ \"$1\" = -u ] && echo 1000\n";

/// Where a real `cp` is (used by the package manager stubs on files of the fake image only).
fn real_cp() -> PathBuf {
    ["/bin/cp", "/usr/bin/cp"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("cp")
}

/// `name` on the test's own `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The shells the script is run with (`/bin/sh`, and `dash`, `busybox sh`, `bash --posix`, `mksh`,
/// `yash` when on `PATH`): each case must behave the same under all of them.
fn shells() -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = vec![vec!["/bin/sh".into()]];
    let mut seen = vec![std::fs::canonicalize("/bin/sh").ok()];
    for (name, extra) in [
        ("dash", None),
        ("busybox", Some("sh")),
        ("bash", Some("--posix")),
        ("mksh", None),
        ("yash", None),
    ] {
        let Some(p) = on_path(name) else { continue };
        let real = std::fs::canonicalize(&p).ok();
        if extra.is_none() && seen.contains(&real) {
            continue;
        }
        seen.push(real);
        let mut cmd = vec![p.display().to_string()];
        cmd.extend(extra.map(String::from));
        found.push(cmd);
    }
    found
}

/// A fake image: the tools in its `bin/` and the state markers of its stubs.
struct Image {
    tools: &'static [&'static str],
    flags: &'static [&'static str],
}

/// What one run produced.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stderr: String,
    /// The stubs' log without the probes (`--version`, `--help`, the PEP 668 check): the installs,
    /// the hooks and the execute, in order.
    actions: Vec<String>,
    termination: Option<String>,
}

fn write_exec(path: &Path, body: &str, w: &Path) {
    let text = format!(
        "#!/bin/sh\nW='{}'\nCP='{}'\n{body}",
        w.display(),
        real_cp().display()
    );
    std::fs::write(path, text).expect("write stub");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod stub");
}

fn run(image: &Image, b: &Bootstrap, setup: &str, env: &[(&str, &str)], shell: &[String]) -> Run {
    run_script(image, &bootstrap_script(b, setup), env, shell)
}

/// Runs `shell… -c script` in a fresh fake image.
fn run_script(image: &Image, script: &str, env: &[(&str, &str)], shell: &[String]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let w = dir.path();
    for d in ["bin", "pkgs", "state", "home"] {
        std::fs::create_dir(w.join(d)).expect("mkdir");
    }
    write_exec(&w.join("pkgs/git"), GIT_STUB, w);
    write_exec(&w.join("pkgs/python3"), PYTHON_STUB, w);
    for tool in image.tools {
        let body = match *tool {
            "git" => GIT_STUB,
            "id" => ID_STUB,
            t if t.starts_with("python3") => PYTHON_STUB,
            "apt-get" | "dnf" | "microdnf" | "yum" | "apk" => PM_STUB,
            other => panic!("no stub for {other}"),
        };
        write_exec(&w.join("bin").join(tool), body, w);
    }
    for flag in image.flags {
        std::fs::write(w.join("state").join(flag), "").expect("flag");
    }
    std::fs::write(w.join("log"), "").expect("log");
    let termination = w.join("termination-log");
    let out = Command::new(&shell[0])
        .args(&shell[1..])
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", w.join("bin"))
        .env("HOME", w.join("home"))
        .env("CLEARML_TASK_ID", TASK)
        .env("CLEARML_TERMINATION_LOG", &termination)
        .env("STUB_LOG", w.join("log"))
        .envs(env.iter().copied())
        .current_dir(w)
        .output()
        .expect("run the shell");
    let log = std::fs::read_to_string(w.join("log")).expect("log");
    let actions = log
        .lines()
        .filter(|l| {
            !(l.ends_with(" -m pip --version")
                || l.ends_with(" -m clearml_agent --help")
                || l.ends_with(" -c …")
                || l.ends_with(" -m pip install --help"))
        })
        .map(String::from)
        .collect();
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        actions,
        termination: std::fs::read_to_string(&termination).ok(),
    }
}

const APT_UPDATE: &str = "apt-get update -q [DEBIAN_FRONTEND=noninteractive]";
const PIP: &str =
    "python3 -m pip install --disable-pip-version-check --no-cache-dir clearml-agent>=1.9,<4";
const PIP_QUIET: &str = "python3 -m pip install --disable-pip-version-check --no-cache-dir --quiet clearml-agent>=1.9,<4";
const EXEC: &str = "python3 -m clearml_agent execute --full-monitoring --require-queue --id 0123456789abcdef0123456789abcdef";

fn apt_install(packages: &str) -> String {
    format!(
        "apt-get install -y -q --no-install-recommends {packages} [DEBIAN_FRONTEND=noninteractive]"
    )
}

struct Case {
    name: &'static str,
    image: Image,
    bootstrap: Bootstrap,
    setup: &'static str,
    env: &'static [(&'static str, &'static str)],
    code: i32,
    actions: Vec<String>,
    /// Lines (parts of lines) stderr must have.
    stderr: &'static [&'static str],
    /// The termination message, exactly; `None`: no file written.
    termination: Option<&'static str>,
}

fn case(
    name: &'static str,
    tools: &'static [&'static str],
    flags: &'static [&'static str],
) -> Case {
    Case {
        name,
        image: Image { tools, flags },
        bootstrap: Bootstrap::default(),
        setup: "",
        env: &[],
        code: 0,
        actions: vec![],
        stderr: &[],
        termination: None,
    }
}

fn s(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

fn cases() -> Vec<Case> {
    let exec_env = "execute env FROM_SETUP= LOCAL_PYTHON=python3";
    vec![
        Case {
            actions: vec![
                APT_UPDATE.into(),
                apt_install("git"),
                PIP.into(),
                EXEC.into(),
                exec_env.into(),
            ],
            stderr: &[
                "clearml bootstrap: installing git with apt-get",
                "clearml bootstrap: installing clearml-agent>=1.9,<4 with ",
            ],
            ..case(
                "Debian with python, no git (python:3.11-slim)",
                &["apt-get", "python3"],
                &["pip.python3"],
            )
        },
        Case {
            actions: vec![
                APT_UPDATE.into(),
                apt_install("git python3 python3-pip"),
                PIP.into(),
                EXEC.into(),
                exec_env.into(),
            ],
            stderr: &["clearml bootstrap: installing git python3 python3-pip with apt-get"],
            ..case(
                "Debian without python (nvidia/cuda:12.4.1-runtime-ubuntu22.04)",
                &["apt-get"],
                &[],
            )
        },
        Case {
            actions: s(&[
                "apk add --no-cache git python3 py3-pip",
                &format!("{PIP} --break-system-packages"),
                EXEC,
                exec_env,
            ]),
            stderr: &[
                "clearml bootstrap: installing git python3 py3-pip with apk",
                "is externally managed (PEP 668): installing with --break-system-packages",
            ],
            ..case(
                "Alpine (apk; its python is externally managed)",
                &["apk"],
                &["distro-em", "pip-break"],
            )
        },
        Case {
            actions: s(&[
                "dnf install -y --setopt=install_weak_deps=False git python3 python3-pip",
                PIP,
                EXEC,
                exec_env,
            ]),
            stderr: &["clearml bootstrap: installing git python3 python3-pip with dnf"],
            ..case("RHEL-like (dnf)", &["dnf"], &[])
        },
        Case {
            actions: s(&[
                "microdnf install -y --nodocs --setopt=install_weak_deps=0 git python3 python3-pip",
                PIP,
                EXEC,
                exec_env,
            ]),
            ..case("UBI minimal (microdnf)", &["microdnf"], &[])
        },
        Case {
            actions: s(&["yum install -y git python3 python3-pip", PIP, EXEC, exec_env]),
            ..case("CentOS 7 (yum)", &["yum"], &[])
        },
        Case {
            actions: s(&[PIP_QUIET, EXEC, exec_env]),
            ..case(
                "everything present: no installs, pip only confirms the pin",
                &["apt-get", "git", "python3"],
                &["pip.python3", "agent.python3"],
            )
        },
        Case {
            env: &[("CLEARML_AGENT_NO_UPDATE", "1")],
            actions: s(&[EXEC, exec_env]),
            ..case(
                "everything present, CLEARML_AGENT_NO_UPDATE: clearml-agent untouched",
                &["apt-get", "git", "python3"],
                &["pip.python3", "agent.python3"],
            )
        },
        Case {
            code: 127,
            stderr: &[
                "clearml bootstrap: python3 is missing and could not be installed: the image has no package manager (apt-get, dnf, microdnf, yum or apk)",
            ],
            termination: Some(
                "clearml bootstrap: python3 is missing and could not be installed: the image has no package manager (apt-get, dnf, microdnf, yum or apk)",
            ),
            ..case("no package manager, no python", &[], &[])
        },
        Case {
            code: 127,
            actions: vec![
                APT_UPDATE.into(),
                apt_install("git python3 python3-pip"),
                apt_install("python3 python3-pip"),
            ],
            stderr: &[
                "clearml bootstrap: warning: apt-get update failed (exit 100)",
                "clearml bootstrap: apt-get could not install git python3 python3-pip (exit 100)",
            ],
            termination: Some(
                "clearml bootstrap: python3 is missing and could not be installed: apt-get could not install python3 python3-pip (exit 100)",
            ),
            ..case("Debian without python, no network", &["apt-get"], &["pm-fails"])
        },
        Case {
            actions: vec![
                APT_UPDATE.into(),
                apt_install("git python3 python3-pip"),
                apt_install("python3 python3-pip"),
                PIP.into(),
                EXEC.into(),
                exec_env.into(),
            ],
            stderr: &[
                "clearml bootstrap: warning: git is missing and could not be installed (apt-get could not install git python3 python3-pip (exit 100)); a task that clones a repository will fail",
            ],
            ..case(
                "git cannot be installed: a warning, python still installed",
                &["apt-get"],
                &["broken-git"],
            )
        },
        Case {
            actions: vec![
                APT_UPDATE.into(),
                apt_install("git"),
                PIP.into(),
                EXEC.into(),
                exec_env.into(),
            ],
            stderr: &[
                "apt-get could not install git (exit 100); the container runs as uid 1000 and installing packages needs root",
                "clearml bootstrap: warning: git is missing",
            ],
            ..case(
                "not root: apt-get fails, git is a warning",
                &["apt-get", "python3", "id"],
                &["pip.python3", "pm-fails"],
            )
        },
        Case {
            code: 127,
            termination: Some(
                "clearml bootstrap: pip is missing for PY and could not be installed: the image has no package manager (apt-get, dnf, microdnf, yum or apk); it is needed to install clearml-agent",
            ),
            ..case(
                "python without pip and no package manager",
                &["git", "python3"],
                &[],
            )
        },
        Case {
            code: 127,
            actions: s(&[PIP]),
            termination: Some(
                "clearml bootstrap: clearml-agent is missing and PY -m pip could not install clearml-agent>=1.9,<4 (exit 1)",
            ),
            ..case(
                "pip install fails (no index)",
                &["git", "python3"],
                &["pip.python3", "pip-fails"],
            )
        },
        Case {
            actions: s(&[&format!("{PIP} --break-system-packages"), EXEC, exec_env]),
            ..case(
                "externally managed python (Debian 12), pip knows --break-system-packages",
                &["git", "python3"],
                &["pip.python3", "em.python3", "pip-break"],
            )
        },
        Case {
            code: 127,
            actions: s(&[PIP]),
            stderr: &["error: externally-managed-environment"],
            termination: Some(
                "clearml bootstrap: clearml-agent is missing and PY -m pip could not install clearml-agent>=1.9,<4 (exit 1)",
            ),
            ..case(
                "externally managed python, pip without --break-system-packages",
                &["git", "python3"],
                &["pip.python3", "em.python3"],
            )
        },
        Case {
            bootstrap: Bootstrap {
                skip_package_installs: true,
                ..Bootstrap::default()
            },
            actions: s(&[PIP, EXEC, exec_env]),
            stderr: &[
                "clearml bootstrap: not installing git: OS package installs are off (airGappedSupport or CLEARML_AGENT_SKIP_CONTAINER_APT)",
                "clearml bootstrap: warning: git is missing and could not be installed (OS package installs are off",
            ],
            ..case(
                "airGappedSupport: no OS packages",
                &["apt-get", "python3"],
                &["pip.python3"],
            )
        },
        Case {
            env: &[("CLEARML_AGENT_SKIP_CONTAINER_APT", "1")],
            code: 127,
            termination: Some(
                "clearml bootstrap: python3 is missing and could not be installed: OS package installs are off (airGappedSupport or CLEARML_AGENT_SKIP_CONTAINER_APT)",
            ),
            ..case("CLEARML_AGENT_SKIP_CONTAINER_APT, no python", &["apt-get"], &[])
        },
        Case {
            env: &[("CLEARML_AGENT_NO_UPDATE", "1")],
            actions: s(&[PIP, EXEC, exec_env]),
            stderr: &["CLEARML_AGENT_NO_UPDATE is set, but"],
            ..case(
                "CLEARML_AGENT_NO_UPDATE without clearml-agent: installed anyway",
                &["git", "python3"],
                &["pip.python3"],
            )
        },
        Case {
            actions: s(&[
                "python3.12 -m pip install --disable-pip-version-check --no-cache-dir clearml-agent>=1.9,<4",
                "python3.12 -m clearml_agent execute --full-monitoring --require-queue --id 0123456789abcdef0123456789abcdef",
                "execute env FROM_SETUP= LOCAL_PYTHON=python3.12",
            ]),
            ..case(
                "the newest python3.N with pip is preferred (the glue's choice)",
                &["git", "python3", "python3.12"],
                &["pip.python3.12"],
            )
        },
        Case {
            env: &[("LOCAL_PYTHON", "python3")],
            actions: s(&[PIP, EXEC, exec_env]),
            ..case(
                "LOCAL_PYTHON set by the user wins",
                &["git", "python3", "python3.12"],
                &["pip.python3", "pip.python3.12"],
            )
        },
        Case {
            bootstrap: Bootstrap {
                agent_version: "==3.0.3".into(),
                custom_bash_script: "echo \"hook customBashScript python=${LOCAL_PYTHON##*/}\" >>\"$STUB_LOG\"".into(),
                ..Bootstrap::default()
            },
            setup: "echo 'hook setup_shell_script' >>\"$STUB_LOG\"\nexport FROM_SETUP=yes",
            actions: vec![
                APT_UPDATE.into(),
                apt_install("git"),
                "hook customBashScript python=python3".into(),
                "python3 -m pip install --disable-pip-version-check --no-cache-dir clearml-agent==3.0.3".into(),
                "hook setup_shell_script".into(),
                EXEC.into(),
                "execute env FROM_SETUP=yes LOCAL_PYTHON=python3".into(),
            ],
            ..case(
                "hooks in the glue's order, the pin, exports reach the agent",
                &["apt-get", "python3"],
                &["pip.python3"],
            )
        },
        Case {
            setup: "echo 'hook setup_shell_script' >>\"$STUB_LOG\"\nfalse\necho 'not reached' >>\"$STUB_LOG\"",
            code: 1,
            actions: s(&[PIP_QUIET, "hook setup_shell_script"]),
            stderr: &["clearml bootstrap: the task's setup_shell_script failed"],
            termination: Some("clearml bootstrap: the task's setup_shell_script failed"),
            ..case(
                "a failing setup script ends the pod, named",
                &["git", "python3"],
                &["pip.python3", "agent.python3"],
            )
        },
        Case {
            bootstrap: Bootstrap {
                custom_bash_script: "exit 3".into(),
                ..Bootstrap::default()
            },
            code: 3,
            termination: Some("clearml bootstrap: the chart's customBashScript failed"),
            ..case(
                "a failing customBashScript ends the pod, named",
                &["git", "python3"],
                &["pip.python3", "agent.python3"],
            )
        },
    ]
}

#[test]
fn bootstrap_matrix_under_every_posix_shell() {
    let shells = shells();
    let mut failures = Vec::new();
    for shell in &shells {
        for c in cases() {
            let r = run(&c.image, &c.bootstrap, c.setup, c.env, shell);
            let what = format!("[{}] {}", shell.join(" "), c.name);
            // messages naming the python use its absolute path, which is per run
            let py = |t: &str| {
                t.split_whitespace()
                    .map(|w| if w.ends_with("/bin/python3") { "PY" } else { w })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut problems = Vec::new();
            if r.code != Some(c.code) {
                problems.push(format!("exit code {:?}, want {}", r.code, c.code));
            }
            if r.actions != c.actions {
                problems.push(format!(
                    "actions:\n    got  {:?}\n    want {:?}",
                    r.actions, c.actions
                ));
            }
            for want in c.stderr {
                if !r.stderr.contains(want) {
                    problems.push(format!("stderr lacks {want:?}"));
                }
            }
            if r.stderr.contains("not found") {
                problems.push("the script ran a command the image does not have".into());
            }
            let termination = r.termination.as_deref().map(py);
            if termination.as_deref() != c.termination {
                problems.push(format!(
                    "termination message {termination:?}, want {:?}",
                    c.termination
                ));
            }
            if let Some(t) = &r.termination
                && !r.stderr.contains(t.as_str())
            {
                problems.push("the termination message is not on stderr too".into());
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{what}:\n  {}\n  stderr:\n{}",
                    problems.join("\n  "),
                    r.stderr
                ));
            }
        }
    }
    println!(
        "{} cases under {} shells: {:?}",
        cases().len(),
        shells.len(),
        shells.iter().map(|s| s.join(" ")).collect::<Vec<_>>()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The harness can fail: a bootstrap that never installs anything is caught on the image without
/// python.
#[test]
fn the_matrix_catches_a_bootstrap_that_installs_nothing() {
    let c = cases()
        .into_iter()
        .find(|c| c.name.starts_with("Debian without python ("))
        .expect("case");
    let broken = Bootstrap {
        skip_package_installs: true,
        ..Bootstrap::default()
    };
    let r = run(&c.image, &broken, c.setup, c.env, &["/bin/sh".to_string()]);
    assert_eq!(r.code, Some(127));
    assert_ne!(r.actions, c.actions);
}

/// The Enterprise chart's `containerCustomBashScript` replaces the bootstrap: the docs' example
/// (ClearML's "applications" values, a bash script with the glue's placeholders) is accepted as it
/// is, filled, and runs under bash: the pinned pip install, then the task.
#[test]
fn the_docs_container_custom_bash_script_runs_under_bash() {
    let values = Values::from_yaml(
        r#"
agentk8sglue:
  airGappedSupport: true
  containerCustomBashScript: |
    export HOME=/tmp
    declare LOCAL_PYTHON
    [ ! -z $LOCAL_PYTHON ] || for i in {{20..5}}; do (which python3.$i 2> /dev/null || command -v python3.$i) && python3.$i -m pip --version && export LOCAL_PYTHON=$(which python3.$i 2> /dev/null || command -v python3.$i) && break ; done
    [ ! -z $LOCAL_PYTHON ] || export LOCAL_PYTHON=python3
    {extra_bash_init_cmd}
    [ ! -z $CLEARML_AGENT_NO_UPDATE ] || $LOCAL_PYTHON -m pip install clearml-agent{agent_install_args}
    {extra_docker_bash_script}
    $LOCAL_PYTHON -m clearml_agent execute {default_execution_agent_args} --id {task_id}
  customBashScript: echo "hook customBashScript" >>"$STUB_LOG"
"#,
    )
    .expect("the docs' values are accepted");
    let b = Bootstrap::from_values(&values.agentk8sglue);
    let (command, script) =
        b.container_command(TASK, "echo 'hook setup_shell_script' >>\"$STUB_LOG\"");
    assert_eq!(command, ["/bin/bash", "-c"]);
    let bash = on_path("bash").expect("bash (the CI runs under it)");
    let image = Image {
        tools: &["git", "python3"],
        flags: &["pip.python3"],
    };
    let r = run_script(&image, &script, &[], &[bash.display().to_string()]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.actions,
        [
            "hook customBashScript",
            "python3 -m pip install clearml-agent>=1.9,<4",
            "hook setup_shell_script",
            EXEC,
            "execute env FROM_SETUP= LOCAL_PYTHON=python3",
        ]
    );
}
