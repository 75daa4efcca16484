/* Shared memory blocks (src/shm.c): anonymous and named, lifetime of names
 * across closes and deaths, squatted names, sizes above 4 GiB, leaks. */
#include "child.h"
#include "queue.h"

#include <ctype.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* While >= 0, getrandom() (which the library uses for the random part of
 * the names it makes up) fills its buffer with this byte, so a test can
 * predict the next made-up name and squat it.  This definition takes the
 * place of libc's in the test executable. */
static int fixed_random = -1;

ssize_t getrandom(void *buf, size_t len, unsigned flags) {
  if (fixed_random < 0)
    return syscall(SYS_getrandom, buf, len, flags);
  memset(buf, fixed_random, len);
  return (ssize_t)len;
}

/* Squats (creates) the name the library will make up next for `kind`, with
 * getrandom() fixed; writes it to `name`. */
static void squat_next_name(const char *kind, char *name, size_t len) {
  fixed_random = 0x5a;
  char probe[128];
  mproc_assert_ok(mproc__shm_make_name(probe, sizeof probe, kind));
  /* "/mproc.<pid>.<kind>.<seq>.<random>": seq sits between the last two dots. */
  char *dot = strrchr(probe, '.');
  ck_assert_ptr_nonnull(dot);
  *dot = '\0';
  dot = strrchr(probe, '.');
  ck_assert_ptr_nonnull(dot);
  unsigned seq = (unsigned)strtoul(dot + 1, NULL, 10);
  snprintf(name, len, "/mproc.%d.%s.%u.5a5a5a5a", (int)getpid(), kind, seq + 1);
  int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  ck_assert_int_ge(fd, 0);
  close(fd);
}

static int shm_exists(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "/dev/shm%s", name);
  struct stat st;
  return stat(path, &st) == 0;
}

static int count_dev_shm(void) {
  char pid[32];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  FILE *p = popen("ls /dev/shm", "re");
  ck_assert_ptr_nonnull(p);
  char line[512];
  int n = 0;
  /* The pid as a whole number: another run's "mproc.13632.*" is not pid 1363's. */
  size_t lp = strlen(pid);
  while (fgets(line, sizeof line, p) != NULL) {
    for (const char *q = strstr(line, pid); q != NULL; q = strstr(q + 1, pid)) {
      if ((q == line || !isdigit((unsigned char)q[-1])) && !isdigit((unsigned char)q[lp])) {
        n++;
        break;
      }
    }
  }
  pclose(p);
  return n;
}

/* Waits (bounded) until /dev/shm<name> is gone, on inotify events. */
static int wait_gone(const char *name, int64_t timeout_ms) {
  int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  ck_assert_int_ge(in, 0);
  ck_assert_int_ge(inotify_add_watch(in, "/dev/shm", IN_DELETE), 0);
  int64_t deadline = mproc__deadline(timeout_ms);
  int gone;
  while (!(gone = !shm_exists(name))) {
    if (mproc__poll1(in, POLLIN, deadline) == MPROC_ETIMEDOUT)
      break;
    char buf[4096];
    while (read(in, buf, sizeof buf) > 0) {
    }
  }
  close(in);
  return gone;
}

START_TEST(test_anon_basics) {
  mproc_shm *s;
  mproc_assert_ok(mproc_shm_new(&s, 10000));
  ck_assert_uint_eq(mproc_shm_size(s), 10000);
  ck_assert_ptr_null(mproc_shm_name(s));
  unsigned char *p = mproc_shm_addr(s);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(((uintptr_t)p) % 4096, 0);
  for (int i = 0; i < 10000; i++)
    ck_assert_int_eq(p[i], 0);
  int fd = mproc_shm_fd(s);
  ck_assert_int_ge(fd, 0);
  /* Never visible in /dev/shm. */
  ck_assert_int_eq(count_dev_shm(), 0);
  /* Attach a second handle through the fd: same bytes. */
  mproc_shm *t;
  mproc_assert_ok(mproc_shm_from_fd(&t, fd));
  ck_assert_uint_eq(mproc_shm_size(t), 10000);
  ck_assert_int_ne(mproc_shm_fd(t), fd);
  p[9999] = 42;
  ck_assert_int_eq(((unsigned char *)mproc_shm_addr(t))[9999], 42);
  mproc_assert_ok(mproc_shm_free(t));
  mproc_assert_ok(mproc_shm_free(s));
}
END_TEST

static int child_writes(void *arg) {
  unsigned char *p = arg;
  for (int i = 0; i < 4096; i++)
    p[i] = (unsigned char)(i * 7);
  return 0;
}

START_TEST(test_anon_inherited) {
  mproc_shm *s;
  mproc_assert_ok(mproc_shm_new(&s, 4096));
  struct child c = child_start(child_writes, mproc_shm_addr(s));
  ck_assert_int_eq(child_wait(&c), 0);
  unsigned char *p = mproc_shm_addr(s);
  for (int i = 0; i < 4096; i++)
    ck_assert_int_eq(p[i], (unsigned char)(i * 7));
  mproc_assert_ok(mproc_shm_free(s));
}
END_TEST

START_TEST(test_anon_errors) {
  mproc_shm *s;
  mproc_assert_err(mproc_shm_new(&s, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_new(NULL, 10), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_new(&s, SIZE_MAX), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_from_fd(&s, -1), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_from_fd(NULL, 0), MPROC_EINVAL);
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  mproc_assert_err(mproc_shm_from_fd(&s, pfd[0]), MPROC_EINVAL); /* not a file */
  close(pfd[0]);
  close(pfd[1]);
  mproc_assert_err(mproc_shm_from_fd(&s, pfd[0]), -EBADF);
  mproc_assert_err(mproc_shm_free(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_unlink(NULL), MPROC_EINVAL);
  ck_assert_ptr_null(mproc_shm_addr(NULL));
  ck_assert_uint_eq(mproc_shm_size(NULL), 0);
  ck_assert_int_eq(mproc_shm_fd(NULL), -1);
  ck_assert_ptr_null(mproc_shm_name(NULL));
  mproc_assert_ok(mproc_shm_new(&s, 1));
  mproc_assert_err(mproc_shm_unlink(s), MPROC_EINVAL); /* anonymous */
  mproc_assert_ok(mproc_shm_free(s));
}
END_TEST

struct name_arg {
  char name[128];
  int ready; /* write end of a pipe: one byte once attached/created */
  size_t size;
};

static int child_attach_and_write(void *arg) {
  struct name_arg *a = arg;
  mproc_shm *s;
  if (mproc_shm_attach(&s, a->name) != 0)
    return 10;
  if (mproc_shm_size(s) != a->size)
    return 11;
  char *p = mproc_shm_addr(s);
  if (strcmp(p, "from the creator") != 0)
    return 12;
  strcpy(p + 100, "from the child");
  return mproc_shm_free(s) == 0 ? 0 : 13;
}

START_TEST(test_named_basics) {
  struct name_arg a = {.size = 5000};
  mproc_test_shm_name(a.name, sizeof a.name, "basic");
  mproc_shm *s;
  mproc_assert_ok(mproc_shm_create(&s, a.name, a.size));
  ck_assert_str_eq(mproc_shm_name(s), a.name);
  ck_assert_uint_eq(mproc_shm_size(s), 5000);
  ck_assert(shm_exists(a.name));
  /* Mode 0600. */
  char path[256];
  snprintf(path, sizeof path, "/dev/shm%s", a.name);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0600);
  strcpy(mproc_shm_addr(s), "from the creator");
  struct child c = child_start(child_attach_and_write, &a);
  ck_assert_int_eq(child_wait(&c), 0);
  ck_assert_str_eq((char *)mproc_shm_addr(s) + 100, "from the child");
  /* The child closed, we are still attached: the name stays. */
  ck_assert(shm_exists(a.name));
  /* A second attachment in this process, then both close. */
  mproc_shm *t;
  mproc_assert_ok(mproc_shm_attach(&t, a.name));
  ck_assert_str_eq((char *)mproc_shm_addr(t) + 100, "from the child");
  /* The fd of a named block, as a receiver would map it: same bytes. */
  mproc_shm *viafd;
  mproc_assert_ok(mproc_shm_from_fd(&viafd, mproc_shm_fd(s)));
  ck_assert_uint_eq(mproc_shm_size(viafd), 5000);
  ck_assert_str_eq(mproc_shm_addr(viafd), "from the creator");
  ck_assert_ptr_null(mproc_shm_name(viafd));
  mproc_assert_ok(mproc_shm_free(viafd));
  mproc_assert_ok(mproc_shm_free(s));
  ck_assert(shm_exists(a.name));
  mproc_assert_ok(mproc_shm_free(t));
  ck_assert(!shm_exists(a.name)); /* the last user closed: gone at once */
  mproc_assert_err(mproc_shm_attach(&t, a.name), -ENOENT);
}
END_TEST

START_TEST(test_named_generated_name) {
  mproc_shm *s;
  mproc_assert_ok(mproc_shm_create(&s, NULL, 100));
  const char *n = mproc_shm_name(s);
  ck_assert_ptr_nonnull(n);
  char pid[32];
  snprintf(pid, sizeof pid, ".%d.", (int)getpid());
  ck_assert_ptr_nonnull(strstr(n, pid));
  ck_assert(shm_exists(n));
  char copy[256];
  strcpy(copy, n);
  mproc_assert_ok(mproc_shm_free(s));
  ck_assert(!shm_exists(copy));
}
END_TEST

/* A made-up name that exists already is replaced, not an error. */
START_TEST(test_made_up_name_collision_retried) {
  char squat[128];
  squat_next_name("shm", squat, sizeof squat);
  mproc_shm *s;
  mproc_assert_ok(mproc_shm_create(&s, NULL, 100));
  ck_assert_str_ne(mproc_shm_name(s), squat);
  ck_assert(shm_exists(mproc_shm_name(s)));
  mproc_assert_ok(mproc_shm_free(s));
  ck_assert(shm_exists(squat)); /* the squatter's object is left alone */
  ck_assert_int_eq(shm_unlink(squat), 0);

  /* The same for the object a spilled queue message travels in. */
  mproc_queue *q;
  struct mproc_queue_options qo = {.capacity = 4096};
  mproc_assert_ok(mproc_queue_new(&q, &qo));
  char big[3000], got[3000];
  memset(big, 'q', sizeof big);
  char kind[24]; /* the queue's spill names carry its id (src/queue.c) */
  snprintf(kind, sizeof kind, "q%016" PRIx64, q->qid);
  squat_next_name(kind, squat, sizeof squat);
  mproc_assert_ok(mproc_queue_put(q, big, sizeof big, 0));
  size_t n = 0;
  mproc_assert_ok(mproc_queue_get(q, got, sizeof got, &n, 0));
  ck_assert_uint_eq(n, sizeof big);
  ck_assert_int_eq(memcmp(got, big, n), 0);
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.spilled, 1);
  mproc_assert_ok(mproc_queue_free(q));
  ck_assert(shm_exists(squat));
  ck_assert_int_eq(shm_unlink(squat), 0);
  fixed_random = -1;
}
END_TEST

START_TEST(test_named_exclusive_and_squatted) {
  char name[128];
  mproc_test_shm_name(name, sizeof name, "squat");
  mproc_shm *s, *t;
  mproc_assert_ok(mproc_shm_create(&s, name, 100));
  /* An existing mproc block is never reused. */
  mproc_assert_err(mproc_shm_create(&t, name, 100), -EEXIST);
  mproc_assert_ok(mproc_shm_free(s));

  /* A name squatted by someone else: create refuses it, attach rejects it. */
  int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
  ck_assert_int_ge(fd, 0);
  mproc_assert_err(mproc_shm_create(&t, name, 100), -EEXIST);
  mproc_assert_err(mproc_shm_attach(&t, name), MPROC_ECORRUPT); /* empty */
  ck_assert_int_eq(ftruncate(fd, 3 * 4096), 0);
  mproc_assert_err(mproc_shm_attach(&t, name), MPROC_ECORRUPT); /* no header */
  ck_assert(shm_exists(name));                                  /* and it is not ours to remove */
  /* Another user's object (owner changed): refused. */
  ck_assert_int_eq(fchown(fd, 12345, 12345), 0);
  mproc_assert_err(mproc_shm_attach(&t, name), -EACCES);
  close(fd);
  ck_assert_int_eq(shm_unlink(name), 0);
  /* A symlink or directory in /dev/shm is not a block either. */
  char path[256];
  snprintf(path, sizeof path, "/dev/shm%s", name);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  ck_assert_int_lt(mproc_shm_attach(&t, name), 0);
  ck_assert_int_eq(rmdir(path), 0);
}
END_TEST

START_TEST(test_named_errors) {
  mproc_shm *s;
  mproc_assert_err(mproc_shm_create(&s, "noslash", 10), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_create(&s, "/a/b", 10), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_create(&s, "/", 10), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_create(&s, "/..", 10), MPROC_EINVAL);
  char longname[MPROC_SHM_NAME_MAX + 2];
  memset(longname, 'x', sizeof longname);
  longname[0] = '/';
  longname[sizeof longname - 1] = '\0';
  mproc_assert_err(mproc_shm_create(&s, longname, 10), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_create(&s, "/x", 0), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_create(&s, "/x", SIZE_MAX), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_create(NULL, "/x", 10), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_attach(&s, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_attach(NULL, "/x"), MPROC_EINVAL);
  mproc_assert_err(mproc_shm_attach(&s, "bad"), MPROC_EINVAL);
  char name[128];
  mproc_test_shm_name(name, sizeof name, "none");
  mproc_assert_err(mproc_shm_attach(&s, name), -ENOENT);
}
END_TEST

START_TEST(test_named_explicit_unlink) {
  char name[128];
  mproc_test_shm_name(name, sizeof name, "unlink");
  mproc_shm *s, *t;
  mproc_assert_ok(mproc_shm_create(&s, name, 64));
  mproc_assert_ok(mproc_shm_attach(&t, name));
  mproc_assert_ok(mproc_shm_unlink(s));
  ck_assert(!shm_exists(name));
  mproc_assert_err(mproc_shm_unlink(t), -ENOENT);
  mproc_shm *u;
  mproc_assert_err(mproc_shm_attach(&u, name), -ENOENT);
  /* Existing attachments keep working. */
  strcpy(mproc_shm_addr(s), "still shared");
  ck_assert_str_eq(mproc_shm_addr(t), "still shared");
  /* The name can be created afresh; closing the old block must not remove
   * the new one. */
  mproc_assert_ok(mproc_shm_create(&u, name, 64));
  mproc_assert_ok(mproc_shm_free(s));
  mproc_assert_ok(mproc_shm_free(t));
  ck_assert(shm_exists(name));
  mproc_assert_ok(mproc_shm_free(u));
  ck_assert(!shm_exists(name));
}
END_TEST

/* Creator A: creates, fills, reports, then waits to be killed. */
static int child_create_and_hang(void *arg) {
  struct name_arg *a = arg;
  mproc_shm *s;
  if (mproc_shm_create(&s, a->name, a->size) != 0)
    return 10;
  unsigned char *p = mproc_shm_addr(s);
  for (size_t i = 0; i < a->size; i++)
    p[i] = (unsigned char)(i % 251);
  char one = 1;
  if (write(a->ready, &one, 1) != 1)
    return 11;
  for (;;)
    pause();
}

static void wait_ready(int fd) {
  ck_assert_int_gt(mproc__poll1(fd, POLLIN, mproc__deadline(30000)), 0);
  char b;
  ck_assert_int_eq(read(fd, &b, 1), 1);
}

START_TEST(test_creator_killed_while_attached) {
  struct name_arg a = {.size = 3 * 4096 + 5};
  mproc_test_shm_name(a.name, sizeof a.name, "killed");
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  a.ready = pfd[1];
  struct child c = child_start(child_create_and_hang, &a);
  wait_ready(pfd[0]);
  mproc_shm *b;
  mproc_assert_ok(mproc_shm_attach(&b, a.name));
  child_kill(&c);
  /* B keeps reading correct data; the name stays while B is attached. */
  unsigned char *p = mproc_shm_addr(b);
  ck_assert_uint_eq(mproc_shm_size(b), a.size);
  for (size_t i = 0; i < a.size; i++)
    ck_assert_int_eq(p[i], (unsigned char)(i % 251));
  ck_assert(shm_exists(a.name));
  mproc_shm *again;
  mproc_assert_ok(mproc_shm_attach(&again, a.name));
  mproc_assert_ok(mproc_shm_free(again));
  ck_assert(shm_exists(a.name));
  mproc_assert_ok(mproc_shm_free(b));
  ck_assert(!shm_exists(a.name));
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

START_TEST(test_last_user_dies) {
  struct name_arg a = {.size = 100};
  mproc_test_shm_name(a.name, sizeof a.name, "lastdies");
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  a.ready = pfd[1];
  struct child c = child_start(child_create_and_hang, &a);
  wait_ready(pfd[0]);
  ck_assert(shm_exists(a.name));
  child_kill(&c);
  /* No one is attached any more: the keeper removes the name. */
  ck_assert_msg(wait_gone(a.name, 20000), "%s still exists after its last user died", a.name);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

/* ---- named queues: the same guarantee ---------------------------------------- */

struct queue_arg {
  char name[128];                /* the queue's */
  char spill[MPROC__Q_NAME_MAX]; /* the creator's spilled message's object */
  int ready;
};

/* Creates the named queue, leaves a spilled and a small message in it. */
static int child_queue_create_and_hang(void *arg) {
  struct queue_arg *a = arg;
  mproc_queue *q;
  struct mproc_queue_options o = {.name = a->name, .capacity = 4096};
  char big[3000];
  memset(big, 'b', sizeof big);
  if (mproc_queue_new(&q, &o) != 0 || mproc_queue_put(q, big, sizeof big, 0) != 0 ||
      mproc_queue_put(q, "small", 5, 0) != 0)
    return 10;
  memcpy(a->spill, mproc__q_rec_at(q, atomic_load(&q->h->head)) + 1, sizeof a->spill);
  char one = 1;
  if (write(a->ready, &one, 1) != 1)
    return 11;
  for (;;)
    pause();
}

static int child_queue_open_and_hang(void *arg) {
  struct queue_arg *a = arg;
  mproc_queue *q;
  if (mproc_queue_attach(&q, a->name, 0) != 0)
    return 10;
  char one = 1;
  if (write(a->ready, &one, 1) != 1)
    return 11;
  for (;;)
    pause();
}

/* Every user of a named queue is SIGKILLed: its name and its spill objects
 * must not stay in /dev/shm. */
START_TEST(test_named_queue_all_users_killed) {
  struct queue_arg *a;
  mproc_assert_ok(mproc__map_anon_shared(sizeof *a, (void **)&a));
  mproc_test_shm_name(a->name, sizeof a->name, "queue");
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  a->ready = pfd[1];
  struct child creator = child_start(child_queue_create_and_hang, a);
  wait_ready(pfd[0]);
  struct child opener = child_start(child_queue_open_and_hang, a);
  wait_ready(pfd[0]);
  ck_assert(shm_exists(a->name));
  ck_assert(shm_exists(a->spill));
  child_kill(&creator);
  ck_assert(shm_exists(a->name)); /* the opener still has it */
  child_kill(&opener);
  ck_assert_msg(wait_gone(a->name, 20000), "%s still exists after its users died", a->name);
  ck_assert_msg(wait_gone(a->spill, 20000), "%s still exists after its queue's users died",
                a->spill);
  mproc_queue *q;
  mproc_assert_err(mproc_queue_attach(&q, a->name, 0), -ENOENT);
  close(pfd[0]);
  close(pfd[1]);
  munmap(a, sizeof *a);
}
END_TEST

START_TEST(test_above_4gib) {
  size_t size = (size_t)5 << 30;
  mproc_shm *s;
  mproc_assert_ok(mproc_shm_new(&s, size));
  ck_assert_uint_eq(mproc_shm_size(s), size);
  unsigned char *p = mproc_shm_addr(s);
  p[0] = 1;
  p[(size_t)4 << 30] = 2;
  p[size - 1] = 3;
  ck_assert_int_eq(p[size - 1] + p[(size_t)4 << 30] + p[0], 6);
  mproc_assert_ok(mproc_shm_free(s));

  struct name_arg a = {.size = size};
  mproc_test_shm_name(a.name, sizeof a.name, "big");
  mproc_assert_ok(mproc_shm_create(&s, a.name, size));
  p = mproc_shm_addr(s);
  p[size - 1] = 0xab;
  mproc_shm *t;
  mproc_assert_ok(mproc_shm_attach(&t, a.name));
  ck_assert_uint_eq(mproc_shm_size(t), size);
  ck_assert_int_eq(((unsigned char *)mproc_shm_addr(t))[size - 1], 0xab);
  mproc_assert_ok(mproc_shm_free(t));
  mproc_assert_ok(mproc_shm_free(s));
}
END_TEST

START_TEST(test_cycles_no_growth) {
  int fds = mproc_test_count_fds(), maps = mproc_test_count_shared_maps(), shm = count_dev_shm();
  for (int i = 0; i < 10000; i++) {
    mproc_shm *s;
    mproc_assert_ok(mproc_shm_new(&s, 4096));
    ((char *)mproc_shm_addr(s))[0] = 1;
    mproc_assert_ok(mproc_shm_free(s));
  }
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
  /* Named blocks: each one forks a keeper (about 0.5 ms, 2 ms under ASan),
   * so 2,000 cycles keep this suite fast under the sanitizers; every tenth
   * block is also attached. */
  for (int i = 0; i < 2000; i++) {
    mproc_shm *s, *t;
    mproc_assert_ok(mproc_shm_create(&s, NULL, 4096));
    if (i % 10 == 0) {
      mproc_assert_ok(mproc_shm_attach(&t, mproc_shm_name(s)));
      mproc_assert_ok(mproc_shm_free(t));
    }
    mproc_assert_ok(mproc_shm_free(s));
  }
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
  ck_assert_int_eq(count_dev_shm(), shm);
}
END_TEST

int main(void) {
  Suite *s = suite_create("shm");
  TCase *tc = mproc_test_tcase(s, "anonymous", 60);
  tcase_add_test(tc, test_anon_basics);
  tcase_add_test(tc, test_anon_inherited);
  tcase_add_test(tc, test_anon_errors);
  tc = mproc_test_tcase(s, "named", 60);
  tcase_add_test(tc, test_named_basics);
  tcase_add_test(tc, test_named_generated_name);
  tcase_add_test(tc, test_named_exclusive_and_squatted);
  tcase_add_test(tc, test_made_up_name_collision_retried);
  tcase_add_test(tc, test_named_errors);
  tcase_add_test(tc, test_named_explicit_unlink);
  tcase_add_test(tc, test_creator_killed_while_attached);
  tcase_add_test(tc, test_last_user_dies);
  tcase_add_test(tc, test_named_queue_all_users_killed);
  tcase_add_test(tc, test_above_4gib);
  tc = mproc_test_tcase(s, "cycles", 120);
  tcase_add_test(tc, test_cycles_no_growth);
  return mproc_test_run(s);
}
