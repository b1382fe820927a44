/* The compute thread pool: the public API is all there is (<quant/threadpool.h>).
 * Engine code includes this name; outside code includes <quant/threadpool.h> (or <quant/quant.h>). */
#ifndef QS_THREADPOOL_H
#define QS_THREADPOOL_H

#include "error.h"
#include <quant/threadpool.h>

#endif
