"""Registry entry of the `batchnorm` exercise: BatchNorm MLPs (a4). The fields are explained in labcheck.exercises."""
from labcheck.exercises import Exercise, dataset_names

def first_600_per_class(split, seed: int):
    from labcheck import data

    return data.first_per_class(split, 600)  # the seed's loader takes the first 600 images of each class


EXERCISE = Exercise(
    id="batchnorm",
    title="BatchNorm MLPs, timing per epoch, deeper variant",
    seed_file="a4_batchnorm_mlp_mnist.txt",
    dataset=dataset_names.MNIST,
    subsampling="first 600 train images per class",
    train_split=first_600_per_class,
    bench_cases=("batchnorm",),
)
