/* Export of a QuantSim (paper §2, ONNX Runtime's QDQ conventions):
 *  - weight FakeQuant → int8 (or intN) initializer + DequantizeLinear (axis when per channel);
 *  - activation FakeQuant → QuantizeLinear + DequantizeLinear (uint8/int8; int4/uint4/int16/uint16 at
 *    opset 21);
 *  - bias → int32 initializer at scale s_in·s_w, zero point 0, + DequantizeLinear;
 *  - opset raised to 13 (21 where 4- or 16-bit types are emitted).
 * The result is a plain ONNX graph our executor and ONNX Runtime both run.
 *
 *   qs_graph *qdq; qs_export_qdq(sim, &qdq, &e); qs_onnx_save(qdq, "model.qdq.onnx", &e);
 *   json_t *enc = qs_export_encodings(sim);       // AIMET encodings 1.0.0 */
#ifndef QS_EXPORT_H
#define QS_EXPORT_H

#include <jansson.h>

#include "quant/quantsim.h"

int qs_export_qdq(const qs_quantsim *sim, qs_graph **out, qs_err *e);
/* {"version":"1.0.0","activation_encodings":[…],"param_encodings":[…],"excluded_layers":[…],"quantizer_args":{…}}
 * each entry {name, enc_type: PER_TENSOR|PER_CHANNEL, dtype: INT, bw, is_sym, scale[], offset[]}, with
 * AIMET's offset = −zero point. */
json_t *qs_export_encodings(const qs_quantsim *sim);

#endif
