/* The one definition of the pool suites' shared page (pool-helpers.h). */
#include "pool-helpers.h"

struct shared *S;
