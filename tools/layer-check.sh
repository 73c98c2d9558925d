#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# layer-check.sh — prove from the sources that no layer includes a higher one.
#
#   tools/layer-check.sh [SRCDIR]     (default: the repository this script is in)
#
# Reads every #include of src/<folder>/*.{c,h} and include/**/*.h and prints,
# per folder, the layers it includes ("public" is include/braid*). Fails (exit
# 1, naming the file and line) when a folder includes a layer it may not:
#
#   sys       itself only: the platform, nothing of braid
#   core      public, core, sys
#   backends  public, core, sys, backends (they implement core/poller.h)
#   sync exec io obs  public, core, sys, and their own folder: facilities
#             stand side by side and never include one another
#   http mpi  public and their own folder: add-ons use only the public API
#   include/  public only (installed headers never reach into src/)
set -euo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

allowed() {
  case "$1" in
    sys) echo "sys" ;;
    core) echo "public core sys" ;;
    backends) echo "public core sys backends" ;;
    sync|exec|io|obs) echo "public core sys $1" ;;
    http|mpi) echo "public $1" ;;
    public) echo "public" ;;
    *) echo "" ;;
  esac
}

# The layer an include line names: a braid header, or nothing. <braid.h> and
# <braid/...> are the public headers; braid's own internal headers are
# included with quotes and their folder ("core/loop.h"); other <...> headers
# are the system's (<sys/socket.h> is not src/sys).
layer_of() {
  local line=$1 inc
  if [[ $line =~ \#[[:space:]]*include[[:space:]]*\<(braid\.h|braid/[^>]*)\> ]]; then
    echo public
  elif [[ $line =~ \#[[:space:]]*include[[:space:]]*\"([^/\"]+)/[^\"]*\" ]]; then
    inc=${BASH_REMATCH[1]}
    if [ -d "src/$inc" ]; then echo "$inc"; fi
  fi
}

status=0
report=()
check_folder() {
  local folder=$1; shift
  local ok seen="" f n line l
  ok=" $(allowed "$folder") "
  while IFS= read -r f; do
    while IFS=: read -r n line; do
      l=$(layer_of "$line")
      [ -n "$l" ] || continue
      case " $seen " in *" $l "*) ;; *) seen="$seen $l" ;; esac
      if [[ "$ok" != *" $l "* ]]; then
        echo "layer-check: $f:$n: $folder includes $l: ${line#"${line%%[![:space:]]*}"}" >&2
        status=1
      fi
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include' "$f")
  done < <("$@")
  report+=("$(printf '%-9s -> %s' "$folder" "$(tr ' ' '\n' <<<"$seen" | sed '/^$/d' | sort | tr '\n' ' ')")")
}

for d in src/*/; do
  folder=$(basename "$d")
  [ -n "$(allowed "$folder")" ] || { echo "layer-check: src/$folder has no layer rule" >&2; status=1; continue; }
  check_folder "$folder" find "src/$folder" -name '*.[ch]'
done
check_folder public find include -name '*.h'

printf '%s\n' "${report[@]}"
[ $status -eq 0 ] && echo "layer-check: every include goes to the same or a lower layer"
exit $status
