# SPDX-License-Identifier: MIT
# Installation of braid: both libraries, the headers, the braid command, the
# pkg-config files and a CMake package, in the GNUInstallDirs layout (on
# Debian with CMAKE_INSTALL_PREFIX=/usr the libraries go to
# lib/<multiarch>, e.g. /usr/lib/x86_64-linux-gnu).
#
#   cmake -S . -B build -DCMAKE_INSTALL_PREFIX=/usr && cmake --build build
#   DESTDIR=/tmp/stage cmake --install build      (`make install PREFIX=/usr`)
#
# Installed:
#   <libdir>/libbraid.so.0.2.0, libbraid.so.0 (SONAME), libbraid.so, libbraid.a
#   <includedir>/braid.h, <includedir>/braid/*.h
#   <libdir>/pkgconfig/braid.pc          -lbraid (shared); `--static`: the archive's needs
#   <libdir>/pkgconfig/braid-static.pc   the archive by path, with everything it needs
#   <libdir>/pkgconfig/braid-http.pc     the HTTP add-on, when built
#   <libdir>/cmake/braid/                find_package(braid): braid::braid (shared
#                                        when installed), braid::braid_shared,
#                                        braid::braid_static
#   <bindir>/braid
include(CMakePackageConfigHelpers)

set(BRAID_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/braid)
set(BRAID_INSTALL_TARGETS braid)
if(TARGET braid_static)
  list(APPEND BRAID_INSTALL_TARGETS braid_static)
endif()

install(TARGETS ${BRAID_INSTALL_TARGETS} EXPORT braidTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT devel
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT devel
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

install(FILES ${PROJECT_SOURCE_DIR}/include/braid.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT devel)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/braid DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT devel FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT runtime)

# The braid command (tools/braid; target braid_cli, installed as `braid`).
if(TARGET braid_cli)
  install(TARGETS braid_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
endif()

# pkg-config. braid.pc: the shared library when it is built (its own
# dependencies in Libs.private, for `pkg-config --static`), else the archive
# with everything in Libs. braid-static.pc: always the archive, named by path
# so that the linker cannot pick the .so.
set(_deps "-lm")
if(CMAKE_DL_LIBS)
  string(APPEND _deps " -l${CMAKE_DL_LIBS}")
endif()
if(BRAID_USES_URING)
  string(APPEND _deps " -luring")
endif()
set(BRAID_PC_STATIC_LIBS "${BRAID_STATIC_LINK_OPTIONS} -pthread ${_deps}")
if(BRAID_BUILD_SHARED)
  set(BRAID_PC_LIBS "-L\${libdir} -lbraid -pthread")
  set(BRAID_PC_LIBS_PRIVATE "${BRAID_PC_STATIC_LIBS}")
else()
  set(BRAID_PC_LIBS "-L\${libdir} -lbraid ${BRAID_PC_STATIC_LIBS}")
  set(BRAID_PC_LIBS_PRIVATE "")
endif()
set(BRAID_PC_NAME braid)
set(BRAID_PC_DESCRIPTION "C runtime for doing many things at once: coroutines on an event loop, a work-stealing CPU pool, a process pool")
set(_pcdir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH BRAID_PC_RELPREFIX /${_pcdir} /)
string(REGEX REPLACE "/$" "" BRAID_PC_RELPREFIX "${BRAID_PC_RELPREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/braid.pc.in ${PROJECT_BINARY_DIR}/braid.pc @ONLY)
set(BRAID_PC_NAME braid-static)
set(BRAID_PC_DESCRIPTION "braid, linked statically (libbraid.a)")
set(BRAID_PC_LIBS "\${libdir}/libbraid.a ${BRAID_PC_STATIC_LIBS}")
set(BRAID_PC_LIBS_PRIVATE "")
configure_file(${PROJECT_SOURCE_DIR}/cmake/braid.pc.in ${PROJECT_BINARY_DIR}/braid-static.pc @ONLY)
set(_pcfiles ${PROJECT_BINARY_DIR}/braid.pc ${PROJECT_BINARY_DIR}/braid-static.pc)
# braid-http.pc for the HTTP add-on (src/http), when it is built: on top of
# braid, with libcurl for static links.
if(TARGET braid_http)
  set(BRAID_PC_NAME braid-http)
  set(BRAID_PC_DESCRIPTION "braid's HTTP client (libcurl's multi interface driven by braid's loop)")
  set(BRAID_PC_LIBS "-L\${libdir} -lbraid-http")
  set(BRAID_PC_LIBS_PRIVATE "")
  set(BRAID_PC_REQUIRES "Requires: braid\nRequires.private: libcurl")
  configure_file(${PROJECT_SOURCE_DIR}/cmake/braid.pc.in ${PROJECT_BINARY_DIR}/braid-http.pc @ONLY)
  list(APPEND _pcfiles ${PROJECT_BINARY_DIR}/braid-http.pc)
endif()
install(FILES ${_pcfiles} DESTINATION ${_pcdir} COMPONENT devel)

# CMake package.
install(EXPORT braidTargets NAMESPACE braid:: DESTINATION ${BRAID_CMAKE_DIR} COMPONENT devel)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/braidConfig.cmake.in
  ${PROJECT_BINARY_DIR}/braidConfig.cmake INSTALL_DESTINATION ${BRAID_CMAKE_DIR})
# 0.x: a new minor version may change the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/braidConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/braidConfig.cmake ${PROJECT_BINARY_DIR}/braidConfigVersion.cmake
  DESTINATION ${BRAID_CMAKE_DIR} COMPONENT devel)
