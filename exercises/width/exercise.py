"""Registry entry of the `width` exercise: Performance vs width (hw2). The fields are explained in labcheck.exercises."""
from labcheck.exercises import Exercise, dataset_names

def fraction_12(split, seed: int):
    from labcheck import data

    return data.subsample_fraction(split, 0.12, seed)  # the seed trains on a random 12% of the train set


EXERCISE = Exercise(
    id="width",
    title="performance vs width, divergent learning rate, interpolation",
    seed_file="hw2_width_fashion_mnist.txt",
    dataset=dataset_names.FASHION,
    subsampling="random 12% of the 60k train images",
    train_split=fraction_12,
    bench_cases=("width",),
    devices=("cpu",),  # one example per step is latency bound: the reference trains on the CPU only
)
