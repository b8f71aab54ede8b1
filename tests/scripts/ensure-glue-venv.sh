#!/usr/bin/env bash
# Creates (idempotently) a Python venv with the official clearml-agent from PyPI, whose
# K8sIntegration (the Python k8s glue) the benchmark runs side by side with our agent
# (tests/src/bin/bench.rs, tests/py/glue_launcher.py). Usage: ensure-glue-venv.sh [VENV_DIR]
# Default VENV_DIR: <repo>/target/glue-venv. Prints the venv's python path on success.
# Needs only python3 (with the venv module) and PyPI.
set -euo pipefail

CLEARML_AGENT_VERSION="3.0.3"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv_dir="${1:-${repo_root}/target/glue-venv}"
python_bin="${venv_dir}/bin/python"
stamp="${venv_dir}/.clearml-agent-${CLEARML_AGENT_VERSION}.ok"

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
    echo "ensure-glue-venv: no python3 found on PATH (set PYTHON=...)" >&2
    exit 2
fi

mkdir -p "$(dirname "${venv_dir}")"
# A lock so that two processes do not build the same venv at once.
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
if ! "${python_bin}" -m pip install --disable-pip-version-check -q \
    "clearml-agent==${CLEARML_AGENT_VERSION}" >&2; then
    echo "ensure-glue-venv: pip could not install clearml-agent==${CLEARML_AGENT_VERSION} into" \
        "${venv_dir} (is PyPI reachable?)" >&2
    exit 3
fi
"${python_bin}" -c "
from clearml_agent.version import __version__ as v
assert v == '${CLEARML_AGENT_VERSION}', v
from clearml_agent.glue.k8s import K8sIntegration
" >&2
touch "${stamp}"
echo "${python_bin}"
