/* mproc_cpu_count(): the CPUs this process may actually use.
 *
 * Design notes.  Two limits apply, and the count is the smaller one:
 *  - the affinity mask (sched_getaffinity), as Python's
 *    os.process_cpu_count();
 *  - the cgroup CPU bandwidth quota, as loky's cpu_count(): a container given
 *    "1.5 CPUs" on a 64-core host must not start 64 busy workers.  The quota
 *    is quota/period CPUs, rounded up.
 *
 * Finding the quota: /proc/self/cgroup gives the process's cgroup path in
 * each hierarchy ("0::/path" for v2, "N:cpu,cpuacct:/path" for v1), and
 * /proc/self/mountinfo where each hierarchy is mounted (fstype cgroup2, or
 * cgroup with the "cpu" super option) and which cgroup is the mount's root
 * (not "/" inside some containers).  A limit set on an ancestor applies to
 * all its descendants, so every directory from the process's cgroup up to
 * the mount point is read and the tightest limit wins.  Every path is read
 * below a root prefix so that tests can feed fixture trees.  Anything
 * unreadable or malformed means "no limit": the affinity count stands. */
#include "process.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILE (1 << 20)

/* Reads a whole (small) file into a fresh NUL-terminated buffer. */
static char *slurp(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  fd = mproc__fd_own(fd);
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    if (len + 1 >= cap) {
      char *nb = cap < MAX_FILE ? realloc(buf, cap * 2) : NULL;
      if (nb == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      free(buf);
      buf = NULL;
      break;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  mproc__close(fd);
  if (buf != NULL)
    buf[len] = '\0';
  return buf;
}

/* CPUs allowed by the limit files of one cgroup directory; 0 if none. */
static int64_t dir_limit(const char *dir, bool v2) {
  char path[4096 + 32]; /* dir is at most 4095 bytes */
  long long quota = -1, period = 0;
  if (v2) {
    snprintf(path, sizeof path, "%s/cpu.max", dir);
    char *s = slurp(path);
    if (s == NULL)
      return 0;
    if (sscanf(s, "%lld %lld", &quota, &period) != 2)
      quota = -1; /* "max 100000": unlimited */
    free(s);
  } else {
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    char *q = slurp(path);
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    char *p = slurp(path);
    if (q == NULL || p == NULL || sscanf(q, "%lld", &quota) != 1 || sscanf(p, "%lld", &period) != 1)
      quota = -1;
    free(q);
    free(p);
  }
  if (quota <= 0 || period <= 0)
    return 0;
  return (quota + period - 1) / period;
}

/* The tightest limit from `base`+`rel` up to `base`; 0 if none. */
static int64_t walk_limit(const char *base, const char *rel, bool v2) {
  char dir[4096];
  int n = snprintf(dir, sizeof dir, "%s%s", base, rel);
  if (n < 0 || (size_t)n >= sizeof dir)
    return 0;
  size_t base_len = strlen(base);
  while (n > 0 && dir[n - 1] == '/' && (size_t)n > base_len)
    dir[--n] = '\0';
  int64_t best = 0;
  for (;;) {
    int64_t l = dir_limit(dir, v2);
    if (l > 0 && (best == 0 || l < best))
      best = l;
    if (strlen(dir) <= base_len)
      break;
    char *slash = strrchr(dir + base_len, '/');
    if (slash == NULL)
      break;
    *slash = '\0';
  }
  return best;
}

/* Whether comma-separated `list` contains `word`. */
static bool has_word(const char *list, const char *word) {
  size_t wl = strlen(word);
  for (const char *p = list; p != NULL && *p != '\0';) {
    const char *c = strchr(p, ',');
    size_t l = c != NULL ? (size_t)(c - p) : strlen(p);
    if (l == wl && strncmp(p, word, wl) == 0)
      return true;
    p = c != NULL ? c + 1 : NULL;
  }
  return false;
}

/* The process's path in the v2 hierarchy (v2) or the v1 "cpu" one. */
static bool cgroup_path(char *cg, bool v2, char *out, size_t len) {
  char *save = NULL;
  for (char *line = strtok_r(cg, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    char *c1 = strchr(line, ':');
    char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    if (c2 == NULL)
      continue;
    *c1 = *c2 = '\0';
    bool match = v2 ? strcmp(line, "0") == 0 && c1 + 1 == c2 : has_word(c1 + 1, "cpu");
    *c1 = *c2 = ':';
    if (match && strlen(c2 + 1) < len) {
      strcpy(out, c2 + 1);
      return true;
    }
  }
  return false;
}

/* Mount root and mount point of the v2 hierarchy or the v1 "cpu" one. */
static bool find_mount(char *mi, bool v2, char *mroot, char *mpoint, size_t len) {
  char *save = NULL;
  for (char *line = strtok_r(mi, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    char root[1024], point[1024], fstype[64], super[1024];
    const char *dash = strstr(line, " - ");
    if (dash == NULL || sscanf(line, "%*s %*s %*s %1023s %1023s", root, point) != 2 ||
        sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2)
      continue;
    bool match = v2 ? strcmp(fstype, "cgroup2") == 0
                    : strcmp(fstype, "cgroup") == 0 && has_word(super, "cpu");
    if (match && strlen(root) < len && strlen(point) < len) {
      strcpy(mroot, root);
      strcpy(mpoint, point);
      return true;
    }
  }
  return false;
}

static int64_t hierarchy_limit(const char *root, bool v2) {
  char path[4096], cg[4096], mroot[1024], mpoint[1024];
  snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
  char *s = slurp(path);
  bool ok = s != NULL && cgroup_path(s, v2, cg, sizeof cg);
  free(s);
  if (!ok)
    return 0;
  snprintf(path, sizeof path, "%s/proc/self/mountinfo", root);
  s = slurp(path);
  ok = s != NULL && find_mount(s, v2, mroot, mpoint, sizeof mroot);
  free(s);
  if (!ok)
    return 0;
  /* The cgroup path is relative to the hierarchy's root; the mount may show
   * only a subtree of it.  A path outside the mounted subtree (cgroup
   * namespaces) leaves the mount point itself as the best guess. */
  const char *rel = cg;
  size_t rl = strlen(mroot);
  if (strcmp(mroot, "/") != 0) {
    if (strncmp(cg, mroot, rl) == 0 && (cg[rl] == '/' || cg[rl] == '\0'))
      rel = cg + rl;
    else
      rel = "";
  }
  char base[4096];
  int n = snprintf(base, sizeof base, "%s%s", root, strcmp(mpoint, "/") == 0 ? "" : mpoint);
  if (n < 0 || (size_t)n >= sizeof base)
    return 0;
  return walk_limit(base, strcmp(rel, "/") == 0 ? "" : rel, v2);
}

int mproc__cgroup_cpu_limit(const char *root, int *cpus) {
  if (root == NULL || cpus == NULL)
    return MPROC_EINVAL;
  int64_t v2 = hierarchy_limit(root, true);
  int64_t v1 = hierarchy_limit(root, false);
  int64_t best = v2 > 0 && (v1 == 0 || v2 < v1) ? v2 : v1;
  if (best <= 0)
    return 0;
  *cpus = best > 1 << 20 ? 1 << 20 : (int)best;
  return 1;
}

int mproc__affinity_cpu_count(void) {
  for (int ncpu = 1024; ncpu <= 1 << 20; ncpu *= 2) {
    cpu_set_t *set = CPU_ALLOC((size_t)ncpu);
    if (set == NULL)
      break;
    size_t size = CPU_ALLOC_SIZE((size_t)ncpu);
    if (sched_getaffinity(0, size, set) == 0) {
      int n = CPU_COUNT_S(size, set);
      CPU_FREE(set);
      return n > 0 ? n : 1;
    }
    CPU_FREE(set);
    if (errno != EINVAL)
      break;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

MPROC_EXTERN int mproc_cpu_count(void) {
  int n = mproc__affinity_cpu_count();
  int limit;
  if (mproc__cgroup_cpu_limit("", &limit) == 1 && limit < n)
    n = limit;
  return n > 0 ? n : 1;
}
