"""Registry entry of the `sgd` exercise: SGD and momentum from scratch (lab3). The fields are explained in labcheck.exercises."""
from labcheck.exercises import Exercise, dataset_names

EXERCISE = Exercise(
    id="sgd",
    title="SGD and momentum from scratch vs torch.optim.SGD",
    seed_file="lab3_sgd_from_scratch_mnist.txt",
    dataset=dataset_names.MNIST,
    bench_cases=("sgd-custom", "sgd-torch"),
)
