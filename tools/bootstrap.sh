#!/usr/bin/env bash
# Idempotent set-up of a development environment: system libraries (apt-get, only when
# missing), a virtual environment in .venv and the three packages in editable mode.
# A stamp file records what was installed; a second run with nothing changed costs < 1 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${GSDF_VENV:-$root/.venv}"

sys_pkgs=(libusb-1.0-0 libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6 libx11-6)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${sys_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[bootstrap] installing system packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp_src=$(cat tools/bootstrap.sh tools/requirements-dev.txt packages/*/pyproject.toml | sha256sum | cut -c1-16)
stamp="$venv/.gsdf-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_src" ]; then
  exit 0
fi

py="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || { echo "[bootstrap] creating $venv"; "$py" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip setuptools wheel
# Install torch first and explicitly: a loose range would pull a multi-GB CUDA build on a
# CPU machine. Keep whatever torch is already there (e.g. a CUDA build on a GPU machine).
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[bootstrap] installing torch ${GSDF_TORCH:-2.13.0}"
  "${pip[@]}" "torch==${GSDF_TORCH:-2.13.0}"
fi
echo "[bootstrap] installing gsdf packages and dev tools"
"${pip[@]}" -e packages/gsdf-eval -e packages/gsdf-data -e packages/gsdf-model -r tools/requirements-dev.txt
# pyrender pins an older PyOpenGL that cannot create a headless EGL context.
"${pip[@]}" --no-deps "PyOpenGL==3.1.10"
echo "$stamp_src" > "$stamp"
echo "[bootstrap] ready: $venv"
