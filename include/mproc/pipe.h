/* mproc — connections: framed messages and fd passing (Python's Pipe/Connection). */
#ifndef MPROC_PIPE_H
#define MPROC_PIPE_H

#include "common.h"

#endif /* MPROC_PIPE_H */
