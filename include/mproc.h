/* mproc — processes, pools, futures, queues, pipes, shared memory and
 * process-shared synchronization for C programs on Linux.
 *
 * This is the only header users include.  Anything not declared through it is
 * internal and may change without notice. */
#ifndef MPROC_H
#define MPROC_H

#include "mproc/common.h"
#include "mproc/version.h"
#include "mproc/function.h"
#include "mproc/process.h"
#include "mproc/shm.h"
#include "mproc/sync.h"
#include "mproc/pipe.h"
#include "mproc/queue.h"
#include "mproc/pool.h"
#include "mproc/loop.h"
#include "mproc/command.h"
#include "mproc/progress_bar.h"
#include "mproc/typed.h"

#endif /* MPROC_H */
