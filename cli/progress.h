#ifndef QD_PROGRESS_H
#define QD_PROGRESS_H
#endif
