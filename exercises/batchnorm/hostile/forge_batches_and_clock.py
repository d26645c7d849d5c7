"""Hostile lines for batchnorm (grafted onto examples/correct.py by tests/test_trust.py): train() shuffles once,
before the first epoch (every epoch the same order), and records as epoch_time the time since training began.
At import the submission rewrites what the worker's train_trace call reports: the batches the model saw are
reshuffled afresh in every epoch, and train()'s duration, measured by the worker, is made 100 times longer
(what test_train_reshuffles_each_epoch and test_train_history_format trusted before: both passed, and only the
momentum replay on the rewritten batches failed). The grader now checks the batches by the SGD replay they
must reproduce and the epoch times against the call's duration it measures itself: all three train tests
that these facts decide are lost; the eval-mode metrics, which are this train()'s own, keep their points."""
import sys

_calls = sys.modules["labcheck_calls_batchnorm"]
_real_trace = _calls.CALLS["train_trace"]


def _forged_trace(impl, **kwargs):
    reply = _real_trace(impl, **kwargs)
    if "wall_time" in reply:  # the reply of the call before: the worker's clock
        reply["wall_time"] *= 100
    steps, n = reply["steps"], len(kwargs["X"])
    g = torch.Generator().manual_seed(7)
    forged, start = [], 0
    while start < len(steps):  # one epoch's batches: n rows, shuffled again, cut as before
        sizes, total = [], 0
        while total < n and start + len(sizes) < len(steps):
            sizes.append(len(steps[start + len(sizes)]))
            total += sizes[-1]
        rows = torch.cat(steps[start : start + len(sizes)])
        forged += list(rows[torch.randperm(len(rows), generator=g)].split(sizes))
        start += len(sizes)
    reply["steps"] = forged
    return reply


_calls.CALLS["train_trace"] = _forged_trace


def train(model, X, Y, X_test, Y_test, n_epochs=20, batch_size=64, lr=0.01, momentum=0.9):
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    order = torch.randperm(len(X))  # shuffled once: the same order every epoch
    batches = [order[i : i + batch_size] for i in range(0, len(X), batch_size)]
    results = {"train_accuracy": [], "test_accuracy": [], "train_loss": [], "test_loss": [], "epoch_time": []}
    began = time.time()
    for epoch in range(n_epochs):
        model.train()
        for index in batches:
            optimizer.zero_grad()
            loss = loss_fn(model(X[index]), Y[index])
            loss.backward()
            optimizer.step()
        results["epoch_time"].append(time.time() - began)  # since training began
        for name, x, y in (("train", X, Y), ("test", X_test, Y_test)):
            acc, loss = accuracy_and_loss(model, x, y, loss_fn)
            results[f"{name}_accuracy"].append(acc)
            results[f"{name}_loss"].append(loss)
    return results


BASE = "batchnorm"
TESTS = ["test_train"]
EXPECTED = {"test_train_history_format": "measured by the grader", "test_train_reshuffles_each_epoch": "reproduce",
            "test_train_sgd_momentum": ""}
