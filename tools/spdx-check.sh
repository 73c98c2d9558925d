#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# spdx-check.sh — every source file of braid names its license: the line
# "SPDX-License-Identifier: MIT" within its first 5 lines.
#
#   tools/spdx-check.sh [FILE...]     (default: every file of the project)
#
# Checked: *.c *.h *.S *.cpp *.go *.py *.sh, CMakeLists.txt, *.cmake,
# *.cmake.in, Makefile, and any other file that starts with a shebang. The
# project's files are git's tracked and untracked-but-not-ignored files (a
# new file counts before it is committed); outside a git checkout, a find
# that skips build*/ directories. Prints each file without the line and how
# many there are; exit status 1 if any. tools/spdx-add.sh adds the line.
set -euo pipefail

# is_source FILE: does the rule apply to FILE?
is_source() {
  case "${1##*/}" in
    *.c | *.h | *.S | *.cpp | *.go | *.py | *.sh | CMakeLists.txt | *.cmake | *.cmake.in | Makefile) return 0 ;;
    *.md | *.txt | *.json | *.supp | *.in | .gitignore | LICENSE) return 1 ;;
  esac
  # Scripts without an extension (.ci/run).
  [ -f "$1" ] && [ "$(head -c 2 "$1" 2>/dev/null)" = "#!" ]
}

files=()
if [ $# -gt 0 ]; then
  files=("$@")
else
  cd "$(dirname "$0")/.."
fi
if [ $# -gt 0 ]; then
  :
elif git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  while IFS= read -r -d '' f; do files+=("$f"); done \
    < <(git ls-files -z --cached --others --exclude-standard)
else
  while IFS= read -r -d '' f; do files+=("${f#./}"); done \
    < <(find . -path './build*' -prune -o -path './.git' -prune -o -type f -print0)
fi

checked=0 missing=0
for f in "${files[@]}"; do
  [ -f "$f" ] || continue # deleted but still in the index
  is_source "$f" || continue
  checked=$((checked + 1))
  if ! head -n 5 "$f" | grep -q 'SPDX-License-Identifier: MIT'; then
    echo "spdx-check: $f: no 'SPDX-License-Identifier: MIT' in its first 5 lines"
    missing=$((missing + 1))
  fi
done
echo "spdx-check: $checked files checked, $missing without the SPDX line"
[ "$missing" -eq 0 ]
