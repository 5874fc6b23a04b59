#!/usr/bin/env bash
# Source this on a GPU machine that has torch and triton but where kernelcast is not installed
# (e.g. the lent H100/H200 image): it makes `kernelcast.*` importable from this checkout without pip,
# by laying out the package-dir mapping of pyproject.toml as symlinks, and installs carried wheels.
#   source benchmarks/device_env.sh && python3 -m kernelcast.cli.main --help
_kc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_kc_shim="${TMPDIR:-/tmp}/kernelcast-shim"
rm -rf "$_kc_shim" && mkdir -p "$_kc_shim/kernelcast"
for f in "$_kc_root"/kernelcast/*; do ln -s "$f" "$_kc_shim/kernelcast/$(basename "$f")"; done
for pkg in measurement surrogate search datasets models; do ln -s "$_kc_root/$pkg" "$_kc_shim/kernelcast/$pkg"; done
if compgen -G "$_kc_root/.whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$_kc_root"/.whl/*.whl
  export PYTHONPATH="/tmp/site:$_kc_shim${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$_kc_shim${PYTHONPATH:+:$PYTHONPATH}"
fi
# The checkout root holds a plain kernelcast/ folder: keep the working directory off sys.path so the shim wins.
export PYTHONSAFEPATH=1
kernelcast() { python3 -m kernelcast.cli.main "$@"; }
export -f kernelcast 2>/dev/null || true
