# SPDX-License-Identifier: MIT
# Cross toolchain: build braid for aarch64 Linux on an x86-64 Debian host.
#
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#
# Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user and, for the
# tests, libcmocka-dev:arm64 and libc6:arm64 (tools/install-deps.sh test
# installs them all).
# Test programs run under qemu-aarch64 through CMAKE_CROSSCOMPILING_EMULATOR,
# so `ctest` works unchanged in the cross build tree.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(BRAID_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${BRAID_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${BRAID_CROSS_TRIPLE}-g++)
set(CMAKE_ASM_COMPILER ${BRAID_CROSS_TRIPLE}-gcc)

# Debian's cross gcc already searches /usr/aarch64-linux-gnu (its libc) and the
# multiarch directories /usr/lib/aarch64-linux-gnu (arm64 packages such as
# libcmocka-dev:arm64). Libraries and packages are looked up only there, never
# in the host's x86-64 directories; programs (pkg-config, sh) come from the host.
set(CMAKE_FIND_ROOT_PATH /usr/${BRAID_CROSS_TRIPLE})
set(CMAKE_LIBRARY_ARCHITECTURE ${BRAID_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config must only see arm64 .pc files; otherwise it would hand out the
# host's liburing / cmocka and the link would fail on x86-64 objects.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${BRAID_CROSS_TRIPLE}/pkgconfig:/usr/${BRAID_CROSS_TRIPLE}/lib/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# The emulator runs test programs with the arm64 libc of Debian's multiarch
# (libc6:arm64, which libcmocka-dev:arm64 pulls in: /lib/ld-linux-aarch64.so.1),
# not with `-L /usr/aarch64-linux-gnu`: qemu-user 7.2 hangs in fork() when -L
# (or QEMU_LD_PREFIX) is set, and the tests fork (crash tests, process pool).
# -L stays the fallback when the multiarch libc is missing.
find_program(BRAID_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(BRAID_QEMU_AARCH64)
  if(EXISTS /lib/ld-linux-aarch64.so.1)
    set(CMAKE_CROSSCOMPILING_EMULATOR "${BRAID_QEMU_AARCH64}")
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR "${BRAID_QEMU_AARCH64};-L;/usr/${BRAID_CROSS_TRIPLE}")
  endif()
endif()
