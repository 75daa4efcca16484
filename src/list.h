/* Intrusive singly linked queues: a head and a tail pointer, linked through
 * a `next`-style field of the element itself (no allocation, any type).
 *
 * Design notes.  Every queue in the pool (pending tasks, callbacks, the loop
 * queue, imap's done list, the requeue list) is first-in first-out with
 * appends at the tail and removals at the head; the registries of started
 * processes and attached queues are doubly linked to unlink from the
 * middle.  These macros are the one place that bookkeeping is written.  They evaluate `head` and
 * `tail` more than once: pass plain lvalues (p->pend_head), never expressions with side effects.
 * Callers hold whatever lock protects the queue. */
#ifndef MPROC_LIST_H
#define MPROC_LIST_H

#include <stddef.h>

/* Append `node` at the tail. */
#define MPROC__LIST_PUSH(head, tail, node, next)                                                   \
  do {                                                                                             \
    (node)->next = NULL;                                                                           \
    if ((tail) != NULL)                                                                            \
      (tail)->next = (node);                                                                       \
    else                                                                                           \
      (head) = (node);                                                                             \
    (tail) = (node);                                                                               \
  } while (0)

/* Move the whole queue (h2, t2) in front of (head, tail); (h2, t2) ends empty. */
#define MPROC__LIST_PREPEND_ALL(head, tail, h2, t2, next)                                          \
  do {                                                                                             \
    if ((h2) != NULL) {                                                                            \
      (t2)->next = (head);                                                                         \
      if ((head) == NULL)                                                                          \
        (tail) = (t2);                                                                             \
      (head) = (h2);                                                                               \
      (h2) = (t2) = NULL;                                                                          \
    }                                                                                              \
  } while (0)

/* Doubly linked lists through `prev`/`next` fields, for registries that
 * remove from the middle (live processes, tracked queues). */
#define MPROC__DLIST_INSERT_HEAD(head, node)                                                       \
  do {                                                                                             \
    (node)->prev = NULL;                                                                           \
    (node)->next = (head);                                                                         \
    if ((head) != NULL)                                                                            \
      (head)->prev = (node);                                                                       \
    (head) = (node);                                                                               \
  } while (0)

/* Unlink `node` (a node not on the list, both links NULL, is left alone). */
#define MPROC__DLIST_REMOVE(head, node)                                                            \
  do {                                                                                             \
    if ((node)->prev != NULL)                                                                      \
      (node)->prev->next = (node)->next;                                                           \
    else if ((head) == (node))                                                                     \
      (head) = (node)->next;                                                                       \
    if ((node)->next != NULL)                                                                      \
      (node)->next->prev = (node)->prev;                                                           \
    (node)->prev = (node)->next = NULL;                                                            \
  } while (0)

#endif /* MPROC_LIST_H */
