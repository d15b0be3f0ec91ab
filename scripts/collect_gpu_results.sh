#!/usr/bin/env bash
# After a device run of scripts/gpu_session.sh: files the results it brought back.
#
#   scripts/collect_gpu_results.sh <files_at>     # the folder the device tool copied $OUT to
#
# Appends results/*.jsonl to bench/results/<name>.jsonl (the records carry device, date and
# commit), and copies summary.txt, the logs and the profiles to
# bench/results/gpu/<date>-<device>/, so what a GPU session measured is kept in the repository.
# Then: python bench/plot.py (plots and tables) and commit.
set -euo pipefail
SRC="${1:?usage: scripts/collect_gpu_results.sh <folder with summary.txt and session.tgz (or logs/, results/)>}"
SRC="$(cd "$SRC" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f "$SRC/summary.txt" ] || { echo "no summary.txt in $SRC: not a gpu_session.sh output" >&2; exit 2; }
# gpu_session.sh packs logs/, results/ and profile/ into session.tgz (the device tool returns at
# most 8 files); the folder the tool wrote is read-only, so unpack into a temporary one
if [ -f "$SRC/session.tgz" ]; then
  UNPACKED="$(mktemp -d)"
  trap 'rm -rf "$UNPACKED"' EXIT
  tar xzf "$SRC/session.tgz" -C "$UNPACKED"
  cp "$SRC/summary.txt" "$UNPACKED/"
  SRC="$UNPACKED"
fi
DEV="$(grep -m1 -oE 'device [A-Za-z0-9 ]+ SMs' "$SRC/logs/env.log" 2>/dev/null | sed -E 's/^device //; s/ SMs$//; s/ /_/g' || true)"
RESULTS="${RESULTS_DIR:-bench/results}"  # RESULTS_DIR: elsewhere (the tests)
DEST="$RESULTS/gpu/$(date -u +%Y-%m-%d)-${DEV:-unknown_gpu}"
if [ -f "$DEST/summary.txt" ] && cmp -s "$SRC/summary.txt" "$DEST/summary.txt"; then
  echo "this session is already collected in $DEST: nothing appended" >&2
  exit 0
fi
mkdir -p "$DEST"
cp "$SRC/summary.txt" "$DEST/"
[ -d "$SRC/logs" ] && cp -r "$SRC/logs" "$DEST/"
[ -d "$SRC/profile" ] && find "$SRC/profile" -name '*.txt' -exec cp {} "$DEST/" \;
for f in "$SRC"/results/*.jsonl; do
  [ -e "$f" ] || continue
  n=$(wc -l < "$f")
  cat "$f" >> "$RESULTS/$(basename "$f")"
  echo "appended $n records to $RESULTS/$(basename "$f")"
done
echo "logs and summary in $DEST"
