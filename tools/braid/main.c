/* SPDX-License-Identifier: MIT */
/* braid — the `braid` command: subcommand dispatch, `help` and `version`. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <braid.h>

#include "commands.h"

typedef struct command {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv);
  void (*help)(FILE *out);
} command;

static const command commands[] = {
    {"compare", "run N waiting or computing tasks one by one, on threads, as coroutines and "
                "in processes:\n             times, speed-ups and timelines",
     cmd_compare, cmd_compare_help},
    {"profile", "run a command and say what it waits on: the verdict (cpu-bound,\n"
                "             io-bound, mixed), where the time went, which model fits",
     cmd_profile, cmd_profile_help},
    {"fetch", "download many URLs concurrently and politely (braid-http): progress,\n"
              "             summary, JSON lines",
     cmd_fetch, cmd_fetch_help},
    {"crawl", "crawl a site: fetch with braid-http, parse on the CPU pool (libxml2),\n"
              "             titles, broken links, and each half's verdict (I/O- or CPU-bound)",
     cmd_crawl, cmd_crawl_help},
    {"trace", "draw a trace recorded with BRAID_TRACE=FILE: 'show' in the terminal\n"
              "             (running, waiting, idle), 'svg' as an SVG timeline",
     cmd_trace, cmd_trace_help},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

static const command *find_command(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: braid <command> [options]\n"
          "\n"
          "commands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(out,
          "  %-10s %s\n"
          "  %-10s %s\n"
          "\n"
          "Run 'braid help <command>' or 'braid <command> --help' for its options.\n",
          "help", "show this text, or a command's options", "version",
          "print braid's version");
}

static int cmd_help(int argc, char **argv) {
  if (argc <= 1) {
    usage(stdout);
    return BRAID_EXIT_OK;
  }
  if (argc > 2) {
    fprintf(stderr, "braid help: expected at most one command name\n");
    return BRAID_EXIT_USAGE;
  }
  const command *c = find_command(argv[1]);
  if (c) {
    c->help(stdout);
    return BRAID_EXIT_OK;
  }
  if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "version") == 0) {
    usage(stdout);
    return BRAID_EXIT_OK;
  }
  fprintf(stderr, "braid help: unknown command '%s' (see 'braid help')\n", argv[1]);
  return BRAID_EXIT_USAGE;
}

static int cmd_version(int argc, char **argv) {
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("usage: braid version\n\nPrint braid's version.\n");
    return BRAID_EXIT_OK;
  }
  if (argc > 1) {
    fprintf(stderr, "braid version: takes no arguments\n");
    return BRAID_EXIT_USAGE;
  }
  printf("braid %s\n", br_version_string());
  return BRAID_EXIT_OK;
}

/* What went to stdout must have arrived: `braid --version > /dev/full`, or
 * help into a closed pipe, fails as coreutils do instead of saying nothing
 * and exiting 0. A command that already failed said why itself. */
static int finish(int rc) {
  errno = 0;
  if ((fflush(stdout) != 0 || ferror(stdout)) && rc == BRAID_EXIT_OK) {
    fprintf(stderr, "braid: writing to stdout failed: %s\n", strerror(errno ? errno : EIO));
    return BRAID_EXIT_FAIL;
  }
  return rc;
}

static int run(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return BRAID_EXIT_USAGE;
  }
  const char *name = argv[1];
  if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
    return cmd_help(argc - 1, argv + 1);
  if (strcmp(name, "version") == 0 || strcmp(name, "--version") == 0)
    return cmd_version(argc - 1, argv + 1);
  const command *c = find_command(name);
  if (!c) {
    if (name[0] == '-')
      fprintf(stderr, "braid: unknown option '%s' (options go after a command; see 'braid help')\n",
              name);
    else
      fprintf(stderr, "braid: unknown command '%s' (see 'braid help')\n", name);
    return BRAID_EXIT_USAGE;
  }
  return c->run(argc - 1, argv + 1);
}

int main(int argc, char **argv) { return finish(run(argc, argv)); }
