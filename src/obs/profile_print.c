/* SPDX-License-Identifier: MIT */
/* profile_print.c — the profiler's report, for people and as JSON. */
#include "obs/profile_int.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

/* A JSON string: the report's texts are ours, but quote what they carry. */
static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

/* Print text wrapped at 78 columns, each line after the first indented. */
static void wrapped(FILE *f, const char *label, const char *text) {
  int col = fprintf(f, "%-16s", label);
  const char *p = text;
  while (*p) {
    const char *w = p;
    while (*w && *w != ' ') w++;
    int len = (int)(w - p);
    if (col + 1 + len > 78 && col > 16) {
      fprintf(f, "\n%16s", "");
      col = 16;
    } else if (col > 16) {
      fputc(' ', f);
      col++;
    }
    fprintf(f, "%.*s", len, p);
    col += len;
    p = *w ? w + 1 : w;
  }
  fputc('\n', f);
}

/* The command's end as a shell tells it: its exit code, or 128 + the signal
 * that killed it (and that signal, else 0). */
static int shell_status(int wait_status, int *sig) {
  *sig = WIFSIGNALED(wait_status) ? WTERMSIG(wait_status) : 0;
  if (*sig) return 128 + *sig;
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 0;
}

int br_profile_print(FILE *f, const br_profile_report *r) {
  if (!f || !r) return BR_EINVAL;
  char verdict[64];
  snprintf(verdict, sizeof verdict, "%s%s%s", br_profile_verdict_name(r->verdict),
           r->detail ? ", " : "", br_profile_detail_name(r->detail));
  fprintf(f, "%-16s%s\n", "verdict", verdict);
  wrapped(f, "evidence", r->evidence);
  wrapped(f, "use", r->recommendation);
  wrapped(f, "in Python", r->python);
  fprintf(f, "%-16s%.2f s wall, %.2f s CPU, %.2f cores busy (peak %.2f of %d)\n",
          "time", r->wall_s, r->cpu_s, r->cores_avg, r->cores_peak, r->cores);
  fprintf(f, "%-16s", "where it went");
  int col = 16, shown = 0;
  for (int k = 0; k < BR_PROFILE_T_COUNT; k++) {
    if (r->time[k] < 0.005) continue;
    char item[40];
    int n = snprintf(item, sizeof item, "%s %.0f%%", br_profile_time_name((br_profile_time)k),
                     100 * r->time[k]);
    if (col + n + 2 > 78) {
      fprintf(f, "\n%16s", "");
      col = 16;
    } else if (shown) {
      fputs(", ", f);
      col += 2;
    }
    fputs(item, f);
    col += n;
    shown++;
  }
  fprintf(f, "%s\n", shown ? "" : "-");
  fprintf(f, "%-16s%d thread%s in %d process%s, %d sample%s, profiler %.1f ms CPU\n", "seen",
          r->threads, r->threads == 1 ? "" : "s", r->processes, r->processes == 1 ? "" : "es",
          r->samples, r->samples == 1 ? "" : "s", r->profiler_cpu_s * 1e3);
  int sig, code = shell_status(r->exit_status, &sig);
  if (sig)
    fprintf(f, "%-16skilled by signal %d (%s)\n", "ended", sig, strsignal(sig));
  else if (code)
    fprintf(f, "%-16sexit status %d\n", "ended", code);
  return ferror(f) ? BR_EIO : 0;
}

int br_profile_print_json(FILE *f, const br_profile_report *r) {
  if (!f || !r) return BR_EINVAL;
  fputs("{\"verdict\":", f);
  json_string(f, br_profile_verdict_name(r->verdict));
  fputs(",\"detail\":", f);
  json_string(f, br_profile_detail_name(r->detail));
  fprintf(f, ",\"wall_s\":%.6f,\"cpu_s\":%.6f,\"cores_avg\":%.4f,\"cores_peak\":%.4f,"
          "\"cores\":%d,\"threads\":%d,\"processes\":%d,\"busy_threads\":%d,\"time\":{",
          r->wall_s, r->cpu_s, r->cores_avg, r->cores_peak, r->cores, r->threads, r->processes,
          r->busy_threads);
  for (int k = 0; k < BR_PROFILE_T_COUNT; k++)
    fprintf(f, "%s\"%s\":%.4f", k ? "," : "", br_profile_time_name((br_profile_time)k),
            r->time[k]);
  int sig, code = shell_status(r->exit_status, &sig);
  fprintf(f, "},\"read_bytes\":%llu,\"write_bytes\":%llu,\"samples\":%d,"
          "\"profiler_cpu_s\":%.6f,\"exit_status\":%d,\"signal\":%d,\"evidence\":",
          (unsigned long long)r->read_bytes, (unsigned long long)r->write_bytes, r->samples,
          r->profiler_cpu_s, code, sig);
  json_string(f, r->evidence);
  fputs(",\"recommendation\":", f);
  json_string(f, r->recommendation);
  fputs(",\"python\":", f);
  json_string(f, r->python);
  fputs("}\n", f);
  return ferror(f) ? BR_EIO : 0;
}
