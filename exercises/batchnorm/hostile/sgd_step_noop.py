"""Hostile lines for batchnorm (grafted onto examples/batchnorm/correct.py by tests/test_trust.py):
at import, torch.optim.SGD.step becomes a no-op, so train() never changes a weight. Before the trust
boundary the probe's own SGD replay ran in the same worker and was a no-op too (16/16). Now the replay
runs in the grader with its own torch: test_train_sgd_momentum is lost; the other train tests check what
this train() really did (its history, eval-mode metrics of the model it has, its batches) and keep
their points."""
import torch

torch.optim.SGD.step = lambda self, closure=None: None

BASE = "batchnorm"
TESTS = ["test_train"]
EXPECTED = {"test_train_sgd_momentum": "differ from SGD"}
