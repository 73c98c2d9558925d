# Installation of braid: the library, its headers, the braid command, a
# pkg-config file (braid.pc) and a CMake package (braidConfig.cmake, version
# file, exported targets in the braid:: namespace).
#
#   cmake --install build --prefix /opt/braid    (or `make install PREFIX=...`)
#   pkg-config --cflags --libs braid             (PKG_CONFIG_PATH=<prefix>/lib/pkgconfig)
#   find_package(braid) + braid::braid           (CMAKE_PREFIX_PATH=<prefix>)
#
# The library is installed static; with -DBUILD_SHARED_LIBS=ON the shared
# library is installed as well (braid::braid is then the shared one and
# braid::braid_static the archive).
include(CMakePackageConfigHelpers)

set(BRAID_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/braid)
set(BRAID_INSTALL_TARGETS braid)

# Did src/ link liburing? (Its pkg-config result lives in src/'s scope.)
get_target_property(_braid_links braid LINK_LIBRARIES)
set(BRAID_USES_URING FALSE)
if(_braid_links MATCHES "LIBURING|uring")
  set(BRAID_USES_URING TRUE)
endif()

if(BUILD_SHARED_LIBS)
  # A second, static build of the same objects' sources, installed beside the
  # shared library as libbraid.a.
  get_target_property(_braid_sources braid SOURCES)
  get_target_property(_braid_src_dir braid SOURCE_DIR)
  set(_abs_sources)
  foreach(s IN LISTS _braid_sources)
    if(NOT IS_ABSOLUTE "${s}")
      set(s "${_braid_src_dir}/${s}")
    endif()
    list(APPEND _abs_sources "${s}")
  endforeach()
  add_library(braid_static STATIC ${_abs_sources})
  add_library(braid::braid_static ALIAS braid_static)
  foreach(prop INCLUDE_DIRECTORIES COMPILE_DEFINITIONS COMPILE_OPTIONS
          INTERFACE_INCLUDE_DIRECTORIES INTERFACE_COMPILE_DEFINITIONS)
    get_target_property(v braid ${prop})
    if(v)
      set_property(TARGET braid_static PROPERTY ${prop} "${v}")
    endif()
  endforeach()
  target_link_libraries(braid_static PUBLIC Threads::Threads PRIVATE ${CMAKE_DL_LIBS} m)
  if(BRAID_USES_URING)
    # Same name as in src/ (imported targets are directory-scoped), so the
    # exported link interface names PkgConfig::LIBURING, which
    # braidConfig.cmake recreates for the consumer.
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(LIBURING REQUIRED QUIET IMPORTED_TARGET liburing)
    target_link_libraries(braid_static PRIVATE PkgConfig::LIBURING)
  endif()
  set_target_properties(braid_static PROPERTIES OUTPUT_NAME braid POSITION_INDEPENDENT_CODE ON
    EXPORT_NAME braid_static)
  list(APPEND BRAID_INSTALL_TARGETS braid_static)
endif()

install(TARGETS ${BRAID_INSTALL_TARGETS} EXPORT braidTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

install(FILES ${PROJECT_SOURCE_DIR}/include/braid.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/braid DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")

# The braid command (tools/braid; target braid_cli, installed as `braid`).
if(TARGET braid_cli)
  install(TARGETS braid_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# pkg-config. A static-only install lists braid's own dependencies in Libs
# (a plain `pkg-config --libs braid` must link); a shared one keeps them in
# Libs.private for `pkg-config --static`.
set(_deps "-lm")
if(CMAKE_DL_LIBS)
  string(APPEND _deps " -l${CMAKE_DL_LIBS}")
endif()
if(BRAID_USES_URING)
  string(APPEND _deps " -luring")
endif()
if(BUILD_SHARED_LIBS)
  set(BRAID_PC_LIBS "-pthread")
  set(BRAID_PC_LIBS_PRIVATE "${_deps}")
else()
  set(BRAID_PC_LIBS "-pthread ${_deps}")
  set(BRAID_PC_LIBS_PRIVATE "")
endif()
set(_pcdir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH BRAID_PC_RELPREFIX /${_pcdir} /)
string(REGEX REPLACE "/$" "" BRAID_PC_RELPREFIX "${BRAID_PC_RELPREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/braid.pc.in ${PROJECT_BINARY_DIR}/braid.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/braid.pc DESTINATION ${_pcdir})

# CMake package.
install(EXPORT braidTargets NAMESPACE braid:: DESTINATION ${BRAID_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/braidConfig.cmake.in
  ${PROJECT_BINARY_DIR}/braidConfig.cmake INSTALL_DESTINATION ${BRAID_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/braidConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/braidConfig.cmake ${PROJECT_BINARY_DIR}/braidConfigVersion.cmake
  DESTINATION ${BRAID_CMAKE_DIR})
