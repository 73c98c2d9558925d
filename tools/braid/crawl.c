/* SPDX-License-Identifier: MIT */
/* braid crawl — the articles' web scraper as a subcommand: examples/scraper.c,
 * compiled in (its main() left out), so `braid crawl URL` and the example are
 * one program. Needs braid-http and libxml2 (tools/braid/CMakeLists.txt sets
 * BRAID_HAVE_CRAWL when both are built); otherwise it says so. */
#include <stdio.h>

#include "commands.h"

#if defined(BRAID_HAVE_CRAWL)
#define SCRAPER_NO_MAIN 1
#include "../../examples/scraper.c"

int cmd_crawl(int argc, char **argv) {
  if (argc > 0) argv[0] = "braid crawl"; /* for its messages */
  return scraper_cli(argc, argv);
}

void cmd_crawl_help(FILE *out) {
  usage(out, "braid crawl");
}
#else
int cmd_crawl(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "braid crawl: this braid was built without braid-http or libxml2 "
                  "(Debian: libcurl4-openssl-dev, libxml2-dev)\n");
  return BRAID_EXIT_FAIL;
}

void cmd_crawl_help(FILE *out) {
  fprintf(out, "usage: braid crawl [options] URL  (needs braid-http and libxml2, not built)\n");
}
#endif
