/* (being written) */
#include "ops/ops.h"

const qs_op_def qs_ops_pool[] = {
    { .op = NULL },
};
