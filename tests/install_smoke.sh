#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# install.smoke — install braid into a temporary prefix and build small
# programs against the installed tree, as a user would:
#   pkg-config braid          -> linked with libbraid.so.0 (NEEDED checked;
#                                libbraid.a when braid was built without it)
#   pkg-config braid-static   -> libbraid.a, no libbraid.so NEEDED
#   find_package(braid)       -> braid::braid (shared) and braid::braid_static
# and checks that the blocking-call watchdog works in the static programs:
# with BRAID_DEBUG=1, a task that blocks its loop for 400 ms is reported
# (the watchdog's object is only linked because the static library's users
# ask for it: -Wl,-u,br__watchdog_link).
#   tests/install_smoke.sh BUILD_DIR [C_COMPILER]
set -euo pipefail
build=$(cd "$1" && pwd)
cc=${2:-cc}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/braid-install-smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { echo "install.smoke: $*"; }
fail() { echo "install.smoke: FAILED: $*"; exit 1; }

shared=ON
grep -q '^BRAID_BUILD_SHARED:BOOL=OFF' "$build/CMakeCache.txt" && shared=OFF

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }

for f in include/braid.h include/braid/errno.h; do
  [ -f "$prefix/$f" ] || fail "missing $f"
done
lib=$(find "$prefix" -name 'libbraid.a' | head -n 1)
[ -n "$lib" ] || fail "libbraid.a not installed"
libdir=$(dirname "$lib")
if [ "$shared" = ON ]; then
  for f in libbraid.so libbraid.so.0; do
    [ -e "$libdir/$f" ] || fail "$f not installed in $libdir"
  done
fi
if [ -x "$build/tools/braid/braid" ] && [ ! -x "$prefix/bin/braid" ]; then
  fail "the braid command was built but not installed"
fi
pcdir=$libdir/pkgconfig
for f in braid.pc braid-static.pc; do
  [ -f "$pcdir/$f" ] || fail "$f not installed in $pcdir"
done
[ -f "$libdir/cmake/braid/braidConfig.cmake" ] || fail "braidConfig.cmake not installed"
# An installed add-on comes with its pkg-config file, which resolves.
for addon in http; do
  if [ -e "$libdir/libbraid-$addon.so" ] || [ -e "$libdir/libbraid-$addon.a" ]; then
    PKG_CONFIG_PATH="$pcdir" pkg-config --exists --print-errors "braid-$addon" ||
      fail "libbraid-$addon installed, but pkg-config braid-$addon does not resolve"
    step "braid-$addon.pc: $(PKG_CONFIG_PATH="$pcdir" pkg-config --libs "braid-$addon")"
  fi
done

mkdir -p "$tmp/app"
cat >"$tmp/app/hello.c" <<'C'
#define _POSIX_C_SOURCE 200809L
#include <braid.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* argv[1] == "block": the main task blocks its loop thread for 400 ms (the
 * watchdog, on with BRAID_DEBUG=1, reports it). */
static void *hello_main(void *arg) {
  if (arg != NULL) {
    /* To the deadline: the watchdog's sampling signal interrupts nanosleep. */
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_nsec += 400 * 1000 * 1000;
    if (end.tv_nsec >= 1000000000L) end.tv_sec++, end.tv_nsec -= 1000000000L;
    do {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
      clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec < end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec < end.tv_nsec));
    return (void *)"blocked";
  }
  int rc = br_sleep_ms(1);
  if (rc < 0) return br_fail(rc, "sleep: %s", br_strerror(rc));
  return (void *)"ok";
}

int main(int argc, char **argv) {
  void *out = NULL;
  int block = argc > 1 && strcmp(argv[1], "block") == 0;
  int rc = br_run(&out, hello_main, block ? (void *)1 : NULL);
  printf("braid %s (headers %d.%d.%d): %s (%s)\n", br_version_string(), BR_VERSION_MAJOR,
         BR_VERSION_MINOR, BR_VERSION_PATCH, rc == 0 ? (const char *)out : "failed",
         br_strerror(rc));
  return rc == 0 ? 0 : 1;
}
C

# check NAME EXE KIND: run EXE; KIND shared: it needs libbraid.so.0; static:
# it does not. Either way, with BRAID_DEBUG=1 its watchdog reports a task that
# blocks the loop.
check() {
  local name=$1 exe=$2 kind=$3 rc=0
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  "$exe" >"$tmp/$name.out" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$tmp/$name.out"; fail "$name: exit status $rc"; }
  echo "  $name: $(cat "$tmp/$name.out")"
  local needed
  needed=" $(readelf -d "$exe" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  case "$kind" in
    shared) [[ "$needed" == *" libbraid.so.0 "* ]] || fail "$name: does not need libbraid.so.0 (NEEDED:$needed)" ;;
    static) [[ "$needed" != *" libbraid.so"* ]] || fail "$name: needs a shared libbraid (NEEDED:$needed)" ;;
  esac
  BRAID_DEBUG=1 "$exe" block >"$tmp/$name.wd.out" 2>"$tmp/$name.wd.err" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$tmp/$name.wd.out" "$tmp/$name.wd.err"; fail "$name block: exit status $rc"; }
  grep -q "blocked for" "$tmp/$name.wd.err" ||
    { cat "$tmp/$name.wd.err"; fail "$name: BRAID_DEBUG=1 and a blocked loop, but no watchdog report"; }
  echo "  $name: BRAID_DEBUG=1: $(grep -m1 'blocked for' "$tmp/$name.wd.err")"
}

pc() { PKG_CONFIG_PATH="$pcdir" pkg-config "$@"; }
# braid.pc is the shared library when there is one, else the archive.
kind=static
[ "$shared" = ON ] && kind=shared
step "pkg-config: $cc hello.c \$(pkg-config --cflags --libs braid)"
flags=$(pc --cflags --libs braid)
echo "  flags: $flags"
# shellcheck disable=SC2086
"$cc" -std=c17 -Wall -Werror -o "$tmp/app/hello_pc" "$tmp/app/hello.c" $flags
check pkg-config.$kind "$tmp/app/hello_pc" $kind

step "pkg-config: $cc hello.c \$(pkg-config --cflags --libs braid-static)"
flags=$(pc --cflags --libs braid-static)
echo "  flags: $flags"
# shellcheck disable=SC2086
"$cc" -std=c17 -Wall -Werror -o "$tmp/app/hello_pc_static" "$tmp/app/hello.c" $flags
check pkg-config.static "$tmp/app/hello_pc_static" static

step "find_package(braid): braid::braid and braid::braid_static"
cat >"$tmp/app/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(braid_smoke C)
find_package(braid 0.2 REQUIRED COMPONENTS static)
add_executable(hello hello.c)
target_link_libraries(hello PRIVATE braid::braid)
add_executable(hello_static hello.c)
target_link_libraries(hello_static PRIVATE braid::braid_static)
CM
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/app/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
if [ "$shared" = ON ]; then
  check cmake.shared "$tmp/app/build/hello" shared
fi
check cmake.static "$tmp/app/build/hello_static" static

echo "install.smoke: ok"
