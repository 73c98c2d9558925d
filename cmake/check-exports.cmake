# SPDX-License-Identifier: MIT
# check-exports.cmake — the ctest test abi.exports: the shared library exports
# the br_ API and nothing else, under the expected SONAME.
#
#   cmake -DLIB=libbraid.so.0.2.0 -DNM=nm [-DREADELF=readelf] [-DSONAME=libbraid.so.0]
#         -P cmake/check-exports.cmake
#
# Fails when `nm -D --defined-only` shows an internal br__ symbol or a symbol
# without the br_ prefix, or when the SONAME differs. Prints the count of
# exported symbols.
foreach(v LIB NM)
  if(NOT ${v})
    message(FATAL_ERROR "check-exports: -D${v}= is required")
  endif()
endforeach()
execute_process(COMMAND ${NM} -D --defined-only ${LIB}
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "check-exports: ${NM} -D --defined-only ${LIB} failed: ${err}")
endif()
string(REPLACE "\n" ";" lines "${out}")
set(good 0)
set(bad)
foreach(line IN LISTS lines)
  if(line STREQUAL "")
    continue()
  endif()
  # "<address> <type> <name>[@@VERSION]"
  string(REGEX REPLACE "^[0-9a-fA-F]* *[A-Za-z] +" "" name "${line}")
  string(REGEX REPLACE "@.*$" "" name "${name}")
  if(name MATCHES "^br_[^_]")
    math(EXPR good "${good} + 1")
  else()
    list(APPEND bad "${line}")
  endif()
endforeach()
if(bad)
  list(LENGTH bad nbad)
  list(JOIN bad "\n  " badtext)
  message(FATAL_ERROR "check-exports: ${LIB} exports ${nbad} symbol(s) outside the br_ API:\n  ${badtext}")
endif()
if(good EQUAL 0)
  message(FATAL_ERROR "check-exports: ${LIB} exports no br_ symbol at all")
endif()
if(SONAME AND READELF)
  execute_process(COMMAND ${READELF} -d ${LIB} OUTPUT_VARIABLE dyn RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT dyn MATCHES "\\(SONAME\\)[^\n]*\\[${SONAME}\\]")
    message(FATAL_ERROR "check-exports: ${LIB}: SONAME is not ${SONAME}")
  endif()
endif()
message(STATUS "check-exports: ${LIB}: ${good} br_ symbols exported, no br__ and none unprefixed"
)
