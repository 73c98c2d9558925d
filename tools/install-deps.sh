#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# install-deps.sh — install the Debian packages braid needs, and only the missing ones.
#
#   tools/install-deps.sh [build] [test] [bench] ...   (default: build)
#
# Groups:
#   build  compiler, CMake, cmocka, liburing: enough for `make`, `make demo`.
#   test   build + what the test matrix needs: the aarch64 cross compiler, its
#          libc, qemu-user, and from Debian's multiarch (dpkg arch arm64) the
#          arm64 libc and cmocka the cross-built tests run with under qemu.
#          The sanitizer builds use gcc's own ASan/UBSan/TSan runtimes (libasan8,
#          libubsan1, libtsan2 come with gcc); clang and its libFuzzer runtime
#          (libclang-rt-14-dev) are for the clang build (make clang) and the
#          fuzzing stage (make fuzz); g++ for the C++17 header checks.
#   bench  build + the peers the benchmarks compare against: Go, Python with
#          uvloop, libuv, TBB (C++), wrk and nginx.
#
# Idempotent: every package is checked with dpkg first; when something is missing
# `apt-get update` runs once, then one `apt-get install` for all of it. Needs root;
# uses sudo when not root and sudo exists, otherwise prints the command and fails.
set -euo pipefail

pkgs_build=(cmake gcc make pkg-config libcmocka-dev liburing-dev)
pkgs_test=(g++ gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libc6:arm64 libcmocka-dev:arm64
           clang libclang-rt-14-dev)
pkgs_bench=(g++ golang-go python3 python3-uvloop libuv1-dev libtbb-dev wrk nginx)
# --- the scraper (examples/scraper.c, tests/test_scraper.c, bench/http_run.py) ---
# libcurl and libxml2 headers build braid-http and the scraper; nginx serves the
# test's and the benchmark's generated sites; aiohttp and golang.org/x/net/html
# (built offline from /usr/share/gocode) are the crawl benchmark's peers.
pkgs_bench+=(libcurl4-openssl-dev libxml2-dev python3-aiohttp golang-golang-x-net-dev)
# --- end of the scraper's block ---
# --- braid-http (src/http, tools/braid/fetch*.c, tests/test_http*.c) ---
# libcurl (its multi-socket interface) builds braid-http and `braid fetch`; the
# tests run Debian's nginx on loopback and make a self-signed certificate
# with openssl for the TLS and HTTP/2 cases.
pkgs_build+=(libcurl4-openssl-dev)
pkgs_test+=(nginx openssl)
# --- end of braid-http's block ---
# --- braid-mpi (src/mpi, tests/test_mpi*.c, bench/mpi/) ---
# Open MPI is the default MPI (libopenmpi-dev, mpirun); MPICH (libmpich-dev,
# mpiexec.mpich) is installed beside it so CI builds braid-mpi against both;
# mpi4py's futures are the benchmark's peer.
pkgs_build+=(libopenmpi-dev openmpi-bin)
pkgs_test+=(libmpich-dev mpich)
pkgs_bench+=(libopenmpi-dev openmpi-bin python3-mpi4py)
# --- end of braid-mpi's block ---
# --- tracing (tests/test_trace.c) ---
# The test checks that `braid trace svg` writes well-formed XML (xmllint) that
# renders to an image that is not blank (rsvg-convert).
pkgs_test+=(libxml2-utils librsvg2-bin)
# --- end of tracing's block ---

# Add-on libraries and tools: each appends its packages to a group above in a
# block of its own, with a comment saying what needs them, e.g.
#   # braid-http (src/http): libcurl's multi interface.
#   pkgs_build+=(libcurl4-openssl-dev)

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(build)

want=()
for g in "${groups[@]}"; do
  case "$g" in
    build) want+=("${pkgs_build[@]}") ;;
    test)  want+=("${pkgs_build[@]}" "${pkgs_test[@]}") ;;
    bench) want+=("${pkgs_build[@]}" "${pkgs_bench[@]}") ;;
    -h|--help) sed -n '3,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-deps: unknown group '$g' (build, test, bench)" >&2; exit 2 ;;
  esac
done

# installed PKG[:ARCH]: a bare name means the native architecture (or "all");
# with several architectures installed dpkg-query prints one line for each.
native=$(dpkg --print-architecture)
installed() {
  local name=${1%%:*} arch=${1#*:}
  [ "$arch" != "$1" ] || arch=$native
  dpkg-query -W -f='${Status} ${Architecture}\n' "$name" 2>/dev/null |
    grep -Eq "^install ok installed ($arch|all)\$"
}

missing=()
declare -A seen=()
for p in "${want[@]}"; do
  [ -n "${seen[$p]:-}" ] && continue
  seen[$p]=1
  if ! installed "$p"; then missing+=("$p"); fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: ${groups[*]}: all ${#seen[@]} packages present"
  exit 0
fi
echo "install-deps: ${groups[*]}: missing ${missing[*]}"

# Root, or sudo, or give up with the exact commands to run.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-deps: not root and no sudo; run as root:" >&2
    for p in "${missing[@]}"; do
      case "$p" in *:arm64) echo "  dpkg --add-architecture arm64" >&2; break ;; esac
    done
    echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

run() { echo "+ $*"; "$@"; }
export DEBIAN_FRONTEND=noninteractive

# Packages of another architecture (cmocka for the aarch64 cross tests) need
# that architecture enabled in dpkg before apt-get update can list them.
for p in "${missing[@]}"; do
  case "$p" in
    *:*)
      arch=${p##*:}
      if [ "$arch" != "$native" ] &&
         ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        run "${SUDO[@]}" dpkg --add-architecture "$arch"
      fi ;;
  esac
done

run "${SUDO[@]}" apt-get update -q
run "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
