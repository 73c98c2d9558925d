#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# run_example.sh — run one example and check it against the expectations
# written in its source, as comment lines:
#
#   // expect: <ERE>          a line of stdout must match; several expect lines
#                             must match lines in that order (other lines may
#                             come between them)
#   // expect-time: MIN..MAX  wall time in seconds (either side may be empty)
#   // expect-exit: CODE      exit status (default 0)
#   // example-args: A B ...  arguments to pass (split on spaces)
#
# An example with no such lines must simply exit 0. stdin is /dev/null.
#
#   tests/run_example.sh [--time-factor F] EXECUTABLE SOURCE
#
# --time-factor multiplies MAX (sanitizer builds run slower). The environment
# variable BRAID_EXAMPLE_EMULATOR, if set, is a command to run the example
# under (qemu-aarch64 -L ... in a cross build).
set -uo pipefail

factor=1
if [ "${1:-}" = "--time-factor" ]; then factor=$2; shift 2; fi
[ $# -eq 2 ] || { echo "usage: $0 [--time-factor F] EXECUTABLE SOURCE" >&2; exit 2; }
exe=$1
src=$2
name=$(basename "$src" .c)

expects=()
tmin=""
tmax=""
want_exit=0
args=()
while IFS= read -r line || [ -n "$line" ]; do
  line=${line%$'\r'}
  if [[ $line =~ ^[[:space:]]*//[[:space:]]*expect:[[:space:]]?(.*)$ ]]; then
    expects+=("${BASH_REMATCH[1]}")
  elif [[ $line =~ ^[[:space:]]*//[[:space:]]*expect-time:[[:space:]]*([0-9.]*)[[:space:]]*\.\.[[:space:]]*([0-9.]*)[[:space:]]*$ ]]; then
    tmin=${BASH_REMATCH[1]}
    tmax=${BASH_REMATCH[2]}
  elif [[ $line =~ ^[[:space:]]*//[[:space:]]*expect-exit:[[:space:]]*([0-9]+)[[:space:]]*$ ]]; then
    want_exit=${BASH_REMATCH[1]}
  elif [[ $line =~ ^[[:space:]]*//[[:space:]]*example-args:[[:space:]]*(.*)$ ]]; then
    read -r -a args <<<"${BASH_REMATCH[1]}"
  elif [[ $line =~ ^[[:space:]]*//[[:space:]]*expect ]]; then
    echo "example.$name: cannot parse: $line" >&2
    exit 2
  fi
done <"$src"

emu=()
if [ -n "${BRAID_EXAMPLE_EMULATOR:-}" ]; then read -r -a emu <<<"$BRAID_EXAMPLE_EMULATOR"; fi

out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

t0=$(date +%s%N)
"${emu[@]}" "$exe" "${args[@]}" >"$out" 2>"$err" </dev/null
code=$?
t1=$(date +%s%N)
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')

echo "---- stdout of $name ${args[*]}"
cat "$out"
if [ -s "$err" ]; then
  echo "---- stderr"
  cat "$err"
fi
echo "----"

fail=0
say() { echo "example.$name: $*"; }

if [ "$code" -ne "$want_exit" ]; then
  if [ "$code" -gt 128 ]; then
    say "FAIL: killed by signal $((code - 128)) (expected exit $want_exit)"
  else
    say "FAIL: exit status $code (expected $want_exit)"
  fi
  fail=1
fi

mapfile -t lines <"$out"
i=0
for re in "${expects[@]}"; do
  found=0
  while [ $i -lt ${#lines[@]} ]; do
    l=${lines[$i]}
    i=$((i + 1))
    [[ $l =~ $re ]]
    case $? in
      0) found=1; break ;;
      2) say "FAIL: invalid regular expression: $re"; fail=1; break 2 ;;
    esac
  done
  if [ $found -eq 0 ]; then
    say "FAIL: no line (after the previous match) matches: $re"
    fail=1
    break
  fi
done

if [ -n "$tmin" ] && awk -v e="$elapsed" -v m="$tmin" 'BEGIN { exit !(e < m) }'; then
  say "FAIL: took ${elapsed}s, expected at least ${tmin}s"
  fail=1
fi
if [ -n "$tmax" ] && awk -v e="$elapsed" -v m="$tmax" -v f="$factor" 'BEGIN { exit !(e > m * f) }'; then
  say "FAIL: took ${elapsed}s, expected at most ${tmax}s (x$factor)"
  fail=1
fi

if [ $fail -eq 0 ]; then
  say "ok (${#expects[@]} expectations, exit $code, ${elapsed}s)"
fi
exit $fail
