/* SPDX-License-Identifier: MIT */
/* braid — br_strerror / br_errname, generated from BR_ERRNO_MAP. */
#include <braid.h>
#include <string.h>

const char *br_strerror(int code) {
  switch (code) {
  case 0:
    return "success";
#define BR__ERR_MSG(name, value, msg) \
  case (value):                       \
    return msg;
    BR_ERRNO_MAP(BR__ERR_MSG)
#undef BR__ERR_MSG
  default:
    break;
  }
  if (code < 0 && code > -4096) return strerror(-code);
  return "unknown error";
}

const char *br_errname(int code) {
  switch (code) {
  case 0:
    return "OK";
#define BR__ERR_NAME(name, value, msg) \
  case (value):                        \
    return #name;
    BR_ERRNO_MAP(BR__ERR_NAME)
#undef BR__ERR_NAME
  default:
    return "UNKNOWN";
  }
}

unsigned br_version(void) {
  return ((unsigned)BR_VERSION_MAJOR << 16) | ((unsigned)BR_VERSION_MINOR << 8) |
         (unsigned)BR_VERSION_PATCH;
}

#define BR__STR2(x) #x
#define BR__STR(x) BR__STR2(x)
const char *br_version_string(void) {
  return BR__STR(BR_VERSION_MAJOR) "." BR__STR(BR_VERSION_MINOR) "." BR__STR(BR_VERSION_PATCH);
}
