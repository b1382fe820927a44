#include "onnx.h"
