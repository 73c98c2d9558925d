/* SPDX-License-Identifier: MIT */
/* braid — the `braid` command: its subcommands.
 *
 * Each subcommand is one entry point `int cmd_NAME(int argc, char **argv)`
 * (argv[0] is the subcommand's name) returning the process exit status:
 * 0 success, 1 the work failed, 2 bad usage (message already on stderr).
 * To add a subcommand: write cmd_NAME and its help in its own file, declare
 * them here and add a row to the table in main.c.
 */
#ifndef BRAID_TOOL_COMMANDS_H
#define BRAID_TOOL_COMMANDS_H

#include <stdio.h>

enum { BRAID_EXIT_OK = 0, BRAID_EXIT_FAIL = 1, BRAID_EXIT_USAGE = 2 };

int cmd_compare(int argc, char **argv);
void cmd_compare_help(FILE *out);
int cmd_profile(int argc, char **argv);
void cmd_profile_help(FILE *out);
int cmd_fetch(int argc, char **argv);
void cmd_fetch_help(FILE *out);
int cmd_crawl(int argc, char **argv);
void cmd_crawl_help(FILE *out);
int cmd_trace(int argc, char **argv);
void cmd_trace_help(FILE *out);

#endif
