#!/usr/bin/env bash
# Prints a short hash of the extension's sources (setup.py, csrc/, kernels/, include/): a prebuilt
# extension (scripts/build_prebuilt.sh) is used on the device only when this hash matches.
# Needs no git (the device gets a copy of the tree without .git).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
{ echo setup.py; find csrc kernels include -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | LC_ALL=C sort; } \
  | while read -r f; do printf '%s\n' "$f"; cat "$f"; done | sha256sum | cut -c1-16
