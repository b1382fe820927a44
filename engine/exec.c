#include "exec.h"
