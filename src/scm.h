/* Internal: attaching descriptors to a message (SCM_RIGHTS), shared by the
 * connections (fdpass.c) and the start methods (start_spawn.c). */
#ifndef MPROC_SRC_SCM_H
#define MPROC_SRC_SCM_H

#include "internal.h"

#include <string.h>
#include <sys/socket.h>

/* The kernel's SCM_MAX_FD: descriptors one message can carry. */
#define MPROC__SCM_FDS 253

/* Room for the control data of MPROC__SCM_FDS descriptors, aligned. */
union mproc__scm_buf {
  char buf[CMSG_SPACE(MPROC__SCM_FDS * sizeof(int))];
  struct cmsghdr align;
};

/* Attaches fds[0..nfds) (nfds <= MPROC__SCM_FDS) to m, using ctl as its
 * control buffer; nothing when nfds is 0. */
static inline void mproc__scm_attach(struct msghdr *m, union mproc__scm_buf *ctl, const int *fds,
                                     size_t nfds) {
  if (nfds == 0)
    return;
  memset(ctl->buf, 0, sizeof ctl->buf);
  m->msg_control = ctl->buf;
  m->msg_controllen = CMSG_SPACE(nfds * sizeof(int));
  struct cmsghdr *h = CMSG_FIRSTHDR(m);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(nfds * sizeof(int));
  memcpy(CMSG_DATA(h), fds, nfds * sizeof(int));
}

#endif /* MPROC_SRC_SCM_H */
