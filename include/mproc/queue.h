/* mproc — bounded multi-producer multi-consumer queues (Python's Queue, SimpleQueue,
 * JoinableQueue). */
#ifndef MPROC_QUEUE_H
#define MPROC_QUEUE_H

#include "common.h"

#endif /* MPROC_QUEUE_H */
