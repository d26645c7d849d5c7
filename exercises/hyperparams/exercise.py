"""Registry entry of the `hyperparams` exercise: Training study (a2). The fields are explained in labcheck.exercises."""
from labcheck.exercises import Exercise, dataset_names

def random_1000(split, seed: int):
    from labcheck import data

    return data.random_split(split, [1000], seed)[0]  # the seed's random_split of the 60k train images


EXERCISE = Exercise(
    id="hyperparams",
    title="optimizers, batch size, batchnorm, augmentation, width",
    seed_file="a2_fashion_hyperparams.txt",
    dataset=dataset_names.FASHION,
    subsampling="random_split 1000 train / 500 validation",
    train_split=random_1000,
    bench_cases=("hyperparams",),
)
