#!/usr/bin/env bash
# Creates (idempotently) one of the tests' Python venvs and prints its python path on success.
# Usage: ensure-venv.sh NAME [VENV_DIR], NAME being
#   sdk   the official ClearML SDK (clearml), used by the fidelity test of the ClearML API double
#         (tests/doubles/tests/clearml_double/sdk.rs). Default VENV_DIR: <repo>/target/py-venv.
#   glue  the official clearml-agent, whose K8sIntegration (the Python k8s glue) the benchmark runs
#         side by side with our agent (tests/e2e/src/bin/bench.rs, tests/py/glue_launcher.py).
#         Default VENV_DIR: <repo>/target/glue-venv.
# A venv is complete once its stamp file (.<package>-<version>.ok) exists; later runs then only
# print its python. Needs only python3 (with the venv module; PYTHON=... picks another) and PyPI.
# Exit codes: 2 no python found, 3 pip could not install the package, 64 bad usage.
set -euo pipefail

usage="usage: ensure-venv.sh sdk|glue [VENV_DIR]"
if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "${usage}" >&2
    exit 64
fi
name="$1"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

case "${name}" in
    sdk)
        package="clearml"
        version="2.1.12" # keep in step with tests/doubles/tests/clearml_double/sdk.rs
        default_venv_dir="${repo_root}/target/py-venv"
        # Checks the installed package (run by the venv's python).
        check="import clearml; assert clearml.__version__ == '${version}', clearml.__version__"
        ;;
    glue)
        package="clearml-agent"
        version="3.0.3" # keep in step with CLEARML_AGENT_VERSION in tests/e2e/src/bench/glue.rs
        default_venv_dir="${repo_root}/target/glue-venv"
        check="
from clearml_agent.version import __version__ as v
assert v == '${version}', v
from clearml_agent.glue.k8s import K8sIntegration
"
        ;;
    *)
        echo "ensure-venv: unknown venv '${name}'; ${usage}" >&2
        exit 64
        ;;
esac

prog="ensure-venv ${name}"
venv_dir="${2:-${default_venv_dir}}"
python_bin="${venv_dir}/bin/python"
stamp="${venv_dir}/.${package}-${version}.ok"

if [[ -f "${stamp}" && -x "${python_bin}" ]]; then
    echo "${python_bin}"
    exit 0
fi

host_python="${PYTHON:-}"
if [[ -z "${host_python}" ]]; then
    for candidate in python3 python; do
        if command -v "${candidate}" >/dev/null 2>&1; then
            host_python="$(command -v "${candidate}")"
            break
        fi
    done
fi
if [[ -z "${host_python}" ]]; then
    echo "${prog}: no python3 found on PATH (set PYTHON=...)" >&2
    exit 2
fi

mkdir -p "$(dirname "${venv_dir}")"
# A lock so that two processes (e.g. test binaries) do not build the same venv at once.
exec 9>"${venv_dir}.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if [[ -f "${stamp}" && -x "${python_bin}" ]]; then
    echo "${python_bin}"
    exit 0
fi

if [[ ! -x "${python_bin}" ]]; then
    "${host_python}" -m venv "${venv_dir}" >&2
fi
if ! "${python_bin}" -m pip install --disable-pip-version-check -q "${package}==${version}" >&2; then
    echo "${prog}: pip could not install ${package}==${version} into ${venv_dir}" \
        "(is PyPI reachable?)" >&2
    exit 3
fi
"${python_bin}" -c "${check}" >&2
touch "${stamp}"
echo "${python_bin}"
