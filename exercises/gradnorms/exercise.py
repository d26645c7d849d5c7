"""Registry entry of the `gradnorms` exercise: Gradient norms and matrix sensing (ps2). The fields are explained in labcheck.exercises."""
from labcheck.exercises import Exercise, dataset_names

EXERCISE = Exercise(
    id="gradnorms",
    title="per-layer gradient norms, matrix sensing",
    seed_file="ps2_gradient_norms_matrix_sensing.txt",
    dataset=dataset_names.MNIST,
    bench_cases=("gradnorms", "gradnorms-sensing"),
)
