#!/usr/bin/env bash
# Creates (idempotently) a Python venv with the official ClearML SDK, used by the fidelity test of the
# ClearML API double (tests/tests/clearml_double.rs). Usage: ensure-python-venv.sh [VENV_DIR]
# Default VENV_DIR: <repo>/target/py-venv. Prints the venv's python path on success.
set -euo pipefail

CLEARML_VERSION="2.1.12"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv_dir="${1:-${repo_root}/target/py-venv}"
python_bin="${venv_dir}/bin/python"
stamp="${venv_dir}/.clearml-${CLEARML_VERSION}.ok"

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
    echo "ensure-python-venv: no python3 found on PATH (set PYTHON=...)" >&2
    exit 2
fi

mkdir -p "$(dirname "${venv_dir}")"
# A lock so that two test processes do not build the same venv at once.
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
if ! "${python_bin}" -m pip install --disable-pip-version-check -q "clearml==${CLEARML_VERSION}" >&2; then
    echo "ensure-python-venv: pip could not install clearml==${CLEARML_VERSION} into ${venv_dir}" \
        "(is PyPI reachable?)" >&2
    exit 3
fi
"${python_bin}" -c "import clearml; assert clearml.__version__ == '${CLEARML_VERSION}', clearml.__version__" >&2
touch "${stamp}"
echo "${python_bin}"
