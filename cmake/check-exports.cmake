# SPDX-License-Identifier: MIT
# check-exports.cmake — the ctest tests abi.exports*: a shared library exports
# its API and nothing else, under the expected SONAME.
#
#   cmake -DLIB=libbraid.so.0.2.0 -DNM=nm [-DREADELF=readelf] [-DSONAME=libbraid.so.0]
#         [-DALLOW=<regex>] -P cmake/check-exports.cmake
#
# ALLOW: what an exported name must match; default ^br_[^_] (the br_ API, no
# internal br__). Fails when `nm -D --defined-only` shows a symbol that does
# not match, or when the SONAME differs. Prints the count of exported symbols.
if(NOT ALLOW)
  set(ALLOW "^br_[^_]")
endif()
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
  if(name MATCHES "${ALLOW}" AND NOT name MATCHES "^br__")
    math(EXPR good "${good} + 1")
  else()
    list(APPEND bad "${line}")
  endif()
endforeach()
if(bad)
  list(LENGTH bad nbad)
  list(JOIN bad "\n  " badtext)
  message(FATAL_ERROR "check-exports: ${LIB} exports ${nbad} symbol(s) outside its API (${ALLOW}):\n  ${badtext}")
endif()
if(good EQUAL 0)
  message(FATAL_ERROR "check-exports: ${LIB} exports no symbol matching ${ALLOW}")
endif()
if(SONAME AND READELF)
  execute_process(COMMAND ${READELF} -d ${LIB} OUTPUT_VARIABLE dyn RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT dyn MATCHES "\\(SONAME\\)[^\n]*\\[${SONAME}\\]")
    message(FATAL_ERROR "check-exports: ${LIB}: SONAME is not ${SONAME}")
  endif()
endif()
message(STATUS "check-exports: ${LIB}: ${good} symbols exported, all matching ${ALLOW}, no br__")
