#ifndef QS_LOSS_H
#define QS_LOSS_H
#endif
