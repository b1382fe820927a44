/* qs_version: the library's version at run time, to compare with the headers' QS_VERSION. */
#include "config.h"

#include <quant/version.h>

const char *qs_version(void) { return PACKAGE_VERSION; }
