/* Data sets (.npy/.npz): the public API is all there is (<quant/data.h>).
 * Engine code includes this name; outside code includes <quant/data.h> (or <quant/quant.h>). */
#ifndef QS_DATA_H
#define QS_DATA_H

#include "tensor.h"
#include <quant/data.h>

#endif
