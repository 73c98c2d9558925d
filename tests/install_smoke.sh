#!/usr/bin/env bash
# install.smoke — install braid into a temporary prefix and build a small
# program against it twice: with pkg-config and with CMake's find_package.
#   tests/install_smoke.sh BUILD_DIR [C_COMPILER]
set -euo pipefail
build=$(cd "$1" && pwd)
cc=${2:-cc}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/braid-install-smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { echo "install.smoke: $*"; }

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }

for f in include/braid.h include/braid/errno.h; do
  [ -f "$prefix/$f" ] || { echo "install.smoke: missing $f"; exit 1; }
done
lib=$(find "$prefix" -name 'libbraid.a' | head -n 1)
[ -n "$lib" ] || { echo "install.smoke: libbraid.a not installed"; exit 1; }
if [ -x "$build/tools/braid/braid" ] && [ ! -x "$prefix/bin/braid" ]; then
  echo "install.smoke: the braid command was built but not installed"; exit 1
fi
pcdir=$(dirname "$(find "$prefix" -name braid.pc | head -n 1)")
[ -f "$pcdir/braid.pc" ] || { echo "install.smoke: braid.pc not installed"; exit 1; }

mkdir -p "$tmp/app"
cat >"$tmp/app/hello.c" <<'C'
#include <braid.h>
#include <stdio.h>

static void *hello_main(void *arg) {
  int rc = br_sleep_ms(1);
  if (rc < 0) return br_fail(rc, "sleep: %s", br_strerror(rc));
  return arg;
}

int main(void) {
  void *out = NULL;
  int rc = br_run(hello_main, (void *)"ok", &out);
  printf("braid %d.%d.%d: %s (%s)\n", BR_VERSION_MAJOR, BR_VERSION_MINOR, BR_VERSION_PATCH,
         rc == 0 ? (const char *)out : "failed", br_strerror(rc));
  return rc == 0 ? 0 : 1;
}
C

step "pkg-config: $cc hello.c \$(pkg-config --cflags --libs braid)"
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs braid)
echo "  flags: $flags"
# shellcheck disable=SC2086
"$cc" -std=c17 -Wall -Werror -o "$tmp/app/hello_pc" "$tmp/app/hello.c" $flags
# A shared libbraid in a private prefix is found through LD_LIBRARY_PATH.
LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/app/hello_pc"

step "find_package(braid) + braid::braid"
cat >"$tmp/app/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(braid_smoke C)
find_package(braid 0.1 REQUIRED)
add_executable(hello hello.c)
target_link_libraries(hello PRIVATE braid::braid)
CM
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/app/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
"$tmp/app/build/hello"

echo "install.smoke: ok"
