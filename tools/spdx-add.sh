#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# spdx-add.sh — add "SPDX-License-Identifier: MIT" to source files that lack
# it, in each file type's comment syntax, as the first line (after a shebang
# line, and after a Python coding line). Idempotent: a file that already has
# the line in its first 5 lines is left alone.
#
#   tools/spdx-add.sh FILE...          the given files
#   tools/spdx-add.sh --all            every file tools/spdx-check.sh checks
#
#   /* SPDX-License-Identifier: MIT */   .c .h .S .cpp
#   // SPDX-License-Identifier: MIT      .go
#   # SPDX-License-Identifier: MIT       .py .sh CMakeLists.txt .cmake
#                                        .cmake.in Makefile, shebang scripts
set -euo pipefail
tag='SPDX-License-Identifier: MIT'

if [ "${1:-}" = "--all" ]; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  mapfile -t files < <("$root/tools/spdx-check.sh" | sed -n "s/^spdx-check: \(.*\): no '.*/\1/p")
  files=("${files[@]/#/$root/}")
  [ ${#files[@]} -gt 0 ] && [ -n "${files[0]}" ] && [ "${files[0]}" != "$root/" ] ||
    { echo "spdx-add: nothing to do"; exit 0; }
else
  files=("$@")
fi

added=0
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "spdx-add: $f: no such file" >&2; exit 1; }
  head -n 5 "$f" | grep -q "$tag" && continue
  case "${f##*/}" in
    *.c | *.h | *.S | *.cpp) line="/* $tag */" ;;
    *.go) line="// $tag" ;;
    *.py | *.sh | CMakeLists.txt | *.cmake | *.cmake.in | Makefile) line="# $tag" ;;
    *)
      if [ "$(head -c 2 "$f")" = "#!" ]; then line="# $tag"; else
        echo "spdx-add: $f: unknown file type, skipped" >&2; continue
      fi ;;
  esac
  # Lines that must stay first: a shebang, then (Python) a coding declaration.
  keep=0
  if [ "$(head -c 2 "$f")" = "#!" ]; then
    keep=1
    case "$f" in
      *.py) sed -n 2p "$f" | grep -Eq '^[ \t\f]*#.*coding[:=]' && keep=2 ;;
    esac
  elif [[ "$f" == *.py ]] && head -n 1 "$f" | grep -Eq '^[ \t\f]*#.*coding[:=]'; then
    keep=1
  fi
  tmp=$(mktemp "$f.spdx.XXXXXX")
  { head -n "$keep" "$f"; printf '%s\n' "$line"; tail -n +"$((keep + 1))" "$f"; } >"$tmp"
  chmod --reference="$f" "$tmp"
  mv "$tmp" "$f"
  echo "spdx-add: $f"
  added=$((added + 1))
done
echo "spdx-add: added the line to $added files"
