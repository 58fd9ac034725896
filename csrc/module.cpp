// Python module fqvit_kernels._C: one function per torch.ops.fqvit op, same name, same positional
// arguments (fqvit_kernels.backends registers each as the op's CPU kernel after validation).
#include "contract.h"
#include "fqvit_cpu.h"

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fqvit CPU kernels (bit-exact with fqvit_kernels.reference)";
  m.def("int8_matmul", &fqvit::int8_matmul, py::arg("a"), py::arg("b"));
  m.def("int8_linear", &fqvit::int8_linear, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("multiplier"),
        py::arg("shift"), py::arg("output_zero_point"), py::arg("gelu_table") = py::none(), py::arg("gelu_cell_bits") = 0,
        py::arg("residual") = py::none(), py::arg("residual_zero_point") = 0,
        py::arg("branch_multiplier") = py::none(), py::arg("residual_multiplier") = py::none(),
        py::arg("residual_shift") = py::none(), py::arg("final_zero_point") = 0);
  m.def("ptf_layernorm", &fqvit::ptf_layernorm, py::arg("x"), py::arg("input_zero_point"), py::arg("ptf_alpha"),
        py::arg("weight_multiplier"), py::arg("bias"), py::arg("shift"), py::arg("output_zero_point"),
        py::arg("variance_offset") = 0);
  m.def("ptf_layernorm_dyadic", &fqvit::ptf_layernorm_dyadic, py::arg("x"), py::arg("input_zero_point"),
        py::arg("ptf_alpha"), py::arg("gamma_multiplier"), py::arg("gamma_shift"), py::arg("beta"),
        py::arg("output_zero_point"));
  m.def("log_int_softmax", &fqvit::log_int_softmax, py::arg("scores"), py::arg("exp_table"), py::arg("bits") = 4);
  m.def("log_attn_v", &fqvit::log_attn_v, py::arg("codes"), py::arg("v"), py::arg("v_zero_point"));
  m.def("attention_scores", &fqvit::attention_scores, py::arg("q"), py::arg("k"), py::arg("qkv_zero_point"),
        py::arg("score_multiplier"), py::arg("score_shift"), py::arg("score_zero_point"));
  m.def("int_attention", &fqvit::int_attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("qkv_zero_point"),
        py::arg("score_multiplier"), py::arg("score_shift"), py::arg("score_zero_point"), py::arg("exp_table"),
        py::arg("out_multiplier"), py::arg("out_shift"), py::arg("out_zero_point"));
  m.def("int_attention_uniform", &fqvit::int_attention_uniform, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("qkv_zero_point"), py::arg("score_multiplier"), py::arg("score_shift"), py::arg("score_zero_point"),
        py::arg("exp_table"), py::arg("inv_softmax_multiplier"), py::arg("inv_softmax_shift"),
        py::arg("softmax_zero_point"), py::arg("out_multiplier"), py::arg("out_shift"), py::arg("out_zero_point"));
  m.def("lis_level_constants", &fqvit::lis_level_constants);
  // The contract constants compiled into the kernels (tests compare them with fqvit_kernels.contract).
  m.def("contract_constants", [] {
    py::dict d;
#define FQVIT_CONTRACT_EXPORT(py_name, cpp_name, type, value) d[#py_name] = fqvit::contract::cpp_name;
    FQVIT_CONTRACT_CONSTANTS(FQVIT_CONTRACT_EXPORT)
#undef FQVIT_CONTRACT_EXPORT
    return d;
  });
  m.def("quantize", &fqvit::quantize, py::arg("x"), py::arg("scale"), py::arg("zero_point"));
  m.def("dequantize", &fqvit::dequantize, py::arg("x"), py::arg("scale"), py::arg("zero_point"));
}
