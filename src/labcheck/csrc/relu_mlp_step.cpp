// labcheck_native.Step: core.ReluMLPStep's training step written against ATen, call for call.
//
// Same kernels, same arguments, same order as ReluMLPStep._python_step in core.py, so the two give
// bit-identical parameters (tests/test_training_core.py checks it). What this saves is the interpreter:
// from Python each of the step's 17 calls costs ~3 us of argument parsing and glue; the bench's Lab-3 loop
// went from 838 to 713-744 us per step (measured). A Step holds its tensors, so a call passes only the
// batch: a pybind11 method call costs ~1 us, where a torch.ops operator taking these 13 arguments cost
// ~30 us more per step (measured, 632 vs 667 us). Every call below is a
// dispatched ATen operator, so the step stays device-generic (CPU and CUDA alike).
//
// Shapes (feature-major, see core.ReluMLPStep): x (B, d_0); weights[j] (d_j, d_j+1) as x @ W + b;
// hidden_t[j], grad_hidden_t[j] (d_j+1, B); logits_t, grad_logits_t (K, B); ones (B,); minus_ones (1, B).
#include <torch/extension.h>

#include <utility>
#include <vector>

namespace {

// target = alpha h^T d (fused: target += alpha h^T d), in whichever orientation of target is contiguous:
// (d_j, d_j+1) = (d_j, B) @ (B, d_j+1), or its transpose (d_j+1, d_j) = (d_j+1, B) @ (B, d_j).
void weight_product(const at::Tensor& target, const at::Tensor& h_t, const at::Tensor& d_t, double alpha, bool fused) {
  const double beta = fused ? 1.0 : 0.0;
  if (target.is_contiguous()) {
    at::Tensor out = target;
    at::addmm_out(out, out, h_t, d_t.t(), beta, alpha);
  } else {
    at::Tensor out = target.t();
    at::addmm_out(out, out, d_t, h_t.t(), beta, alpha);
  }
}

// torch.optim.SGD(fused=True)'s kernel on one layer's parameters, right after their gradients are written
// (while they are still in cache) instead of after the whole backward: the update of each element
// depends on that element alone, so the result is optimizer.step()'s, bit for bit. The tensors are
// the optimizer's own (its parameters, their .grad, its momentum buffers), grouped by layer.
struct SgdInBackward {
  std::vector<std::vector<at::Tensor>> params, grads, momentum_buffers;  // [layer][the optimizer's tensors]
  double weight_decay, momentum, lr, dampening;
  bool nesterov, maximize;

  void update(int64_t layer) const {
    at::_fused_sgd_(params[layer], grads[layer], momentum_buffers[layer], weight_decay, momentum, lr, dampening,
                    nesterov, maximize, /*is_first_step=*/false);
  }
};

void relu_mlp_step(const at::Tensor& x, const at::Tensor& y, at::TensorList weights, at::TensorList biases,
                   at::TensorList hidden_t, at::TensorList grad_hidden_t, const at::Tensor& logits_t,
                   const at::Tensor& grad_logits_t, const at::Tensor& ones, const at::Tensor& minus_ones,
                   at::TensorList grad_weights, at::TensorList grad_biases, double lr,
                   const SgdInBackward* sgd = nullptr) {
  const bool fused = grad_weights.empty();  // no gradient buffers: W -= lr/B h^T d directly
  const int64_t last = static_cast<int64_t>(weights.size()) - 1;
  // The batch mean's 1/B rides on the products' alpha (exact for a power-of-two B).
  const double scale = 1.0 / static_cast<double>(x.size(0));
  const at::Tensor x_t = x.t();  // (d_0, B)
  at::Tensor h_t = x_t;
  for (int64_t j = 0; j < last; ++j) {
    at::Tensor out = hidden_t[j];
    at::addmm_out(out, biases[j].unsqueeze(1), weights[j].t(), h_t).relu_();  // (d_j+1, B)
    h_t = out;
  }
  at::Tensor logits = logits_t;
  at::addmm_out(logits, biases[last].unsqueeze(1), weights[last].t(), h_t);  // (K, B)
  at::Tensor d_t = grad_logits_t;
  at::_softmax_out(d_t, logits_t, 0, false);  // (K, B) over classes
  d_t.scatter_add_(0, y.unsqueeze(0), minus_ones);  // minus the one-hot: B * dLoss/dlogits^T
  for (int64_t j = last; j >= 0; --j) {
    at::Tensor grad_h_t;
    if (j > 0) {  // dh^T = W d^T, masked by the ReLU
      grad_h_t = grad_hidden_t[j - 1];
      at::mm_out(grad_h_t, weights[j], d_t);
      at::threshold_backward_out(grad_h_t, grad_h_t, hidden_t[j - 1], 0);
    }
    const at::Tensor& inputs_t = j > 0 ? hidden_t[j - 1] : x_t;
    if (fused) {
      weight_product(weights[j], inputs_t, d_t, -lr * scale, true);  // W -= lr/B h^T d
      biases[j].addmv_(d_t, ones, 1.0, -lr * scale);  // b -= lr/B sum_i d_i
    } else {
      weight_product(grad_weights[j], inputs_t, d_t, scale, false);  // dW = h^T d / B
      at::Tensor grad_bias = grad_biases[j];
      at::addmv_out(grad_bias, grad_bias, d_t, ones, 0.0, scale);  // db = sum_i d_i / B
      if (sgd != nullptr) sgd->update(j);  // W_j's last use was the dh^T product above
    }
    if (j > 0) d_t = grad_h_t;
  }
}

// The step of one model at one batch size: its parameters, gradient buffers (none: the fused update) and
// activation buffers, given once; step(x, y) trains on a batch.
class Step {
 public:
  Step(std::vector<at::Tensor> weights, std::vector<at::Tensor> biases, std::vector<at::Tensor> grad_weights,
       std::vector<at::Tensor> grad_biases, std::vector<at::Tensor> hidden_t, std::vector<at::Tensor> grad_hidden_t,
       at::Tensor logits_t, at::Tensor grad_logits_t, at::Tensor ones, at::Tensor minus_ones, double lr)
      : weights_(std::move(weights)), biases_(std::move(biases)), grad_weights_(std::move(grad_weights)),
        grad_biases_(std::move(grad_biases)), hidden_t_(std::move(hidden_t)), grad_hidden_t_(std::move(grad_hidden_t)),
        logits_t_(std::move(logits_t)), grad_logits_t_(std::move(grad_logits_t)), ones_(std::move(ones)),
        minus_ones_(std::move(minus_ones)), lr_(lr) {}

  void step(const at::Tensor& x, const at::Tensor& y) const {
    at::NoGradGuard no_grad;  // the parameters are autograd leaves, updated in place
    relu_mlp_step(x.reshape({x.size(0), -1}), y, weights_, biases_, hidden_t_, grad_hidden_t_, logits_t_,
                  grad_logits_t_, ones_, minus_ones_, grad_weights_, grad_biases_, lr_);
  }

  // step() with gradient buffers, then each layer's SGD update as soon as its gradients are written.
  void step_sgd(const at::Tensor& x, const at::Tensor& y, const SgdInBackward& sgd) const {
    TORCH_CHECK(!grad_weights_.empty(), "step_sgd needs the gradient buffers (ReluMLPStep lr=None)");
    TORCH_CHECK(sgd.params.size() == weights_.size() && sgd.grads.size() == weights_.size() &&
                    sgd.momentum_buffers.size() == weights_.size(), "step_sgd: one tensor group per layer");
    at::NoGradGuard no_grad;
    relu_mlp_step(x.reshape({x.size(0), -1}), y, weights_, biases_, hidden_t_, grad_hidden_t_, logits_t_,
                  grad_logits_t_, ones_, minus_ones_, grad_weights_, grad_biases_, lr_, &sgd);
  }

 private:
  std::vector<at::Tensor> weights_, biases_, grad_weights_, grad_biases_, hidden_t_, grad_hidden_t_;
  at::Tensor logits_t_, grad_logits_t_, ones_, minus_ones_;
  double lr_;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<SgdInBackward>(m, "SgdInBackward")
      .def(pybind11::init([](std::vector<std::vector<at::Tensor>> params, std::vector<std::vector<at::Tensor>> grads,
                             std::vector<std::vector<at::Tensor>> momentum_buffers, double weight_decay,
                             double momentum, double lr, double dampening, bool nesterov, bool maximize) {
             return SgdInBackward{std::move(params), std::move(grads), std::move(momentum_buffers), weight_decay,
                                  momentum, lr, dampening, nesterov, maximize};
           }),
           pybind11::arg("params"), pybind11::arg("grads"), pybind11::arg("momentum_buffers"),
           pybind11::arg("weight_decay"), pybind11::arg("momentum"), pybind11::arg("lr"), pybind11::arg("dampening"),
           pybind11::arg("nesterov"), pybind11::arg("maximize"));
  pybind11::class_<Step>(m, "Step")
      .def(pybind11::init<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                          std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor,
                          at::Tensor, at::Tensor, at::Tensor, double>(),
           pybind11::arg("weights"), pybind11::arg("biases"), pybind11::arg("grad_weights"),
           pybind11::arg("grad_biases"), pybind11::arg("hidden_t"), pybind11::arg("grad_hidden_t"),
           pybind11::arg("logits_t"), pybind11::arg("grad_logits_t"), pybind11::arg("ones"),
           pybind11::arg("minus_ones"), pybind11::arg("lr"))
      .def("step", &Step::step, pybind11::arg("x"), pybind11::arg("y"))
      .def("step_sgd", &Step::step_sgd, pybind11::arg("x"), pybind11::arg("y"), pybind11::arg("sgd"));
}
