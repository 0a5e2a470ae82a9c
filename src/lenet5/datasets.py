"""The image sets lenet5 trains on (--dataset): MNIST, and two sets made as drop-in replacements for
it in the same IDX files (60,000 + 10,000 grey 28x28 images, ten classes): Fashion-MNIST (clothes)
and KMNIST (cursive Japanese characters). For each: where its files live and come from, how every
file is checked, its class names and its normalisation. No torch here, so that reading the flags
needs none; data.py reads and checks the files.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

# The four files of every set, in torchvision's names: (IDX magic number, images or labels).
NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGES, LABELS = 2051, 2049  # IDX magic: unsigned bytes, 3 dimensions (images) or 1 (labels)


@dataclass(frozen=True)
class Dataset:
    name: str  # the --dataset value
    title: str  # as people write it
    folder: str  # its files live in <data root>/<folder>/raw/ (torchvision's layout)
    mirrors: tuple[str, ...]  # tried in order, each with the file name appended
    # What each file is checked against. "content": the MD5 of the uncompressed file, so that any
    # gzip of the right bytes verifies (MNIST: the seed's copies are re-gzipped). "download": the
    # .gz file as its authors publish it, which must then be that very file (the only checksums
    # published for Fashion-MNIST and KMNIST are of their .gz files).
    checked: str
    checksums: dict[str, dict[str, str]]  # file name -> {"md5": ...} or {"sha256": ..., "md5": ...}
    classes: tuple[str, ...]  # label 0 to 9, in words
    mean: float  # of the training images' pixels, scaled to [0, 1]: the default normalisation
    std: float
    counts: tuple[int, int] = (60000, 10000)  # training and test images

    def files(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """name -> (IDX magic, shape) of its four files."""
        train, test = self.counts
        shapes = ((train, 28, 28), (train,), (test, 28, 28), (test,))
        return {n: (IMAGES if len(s) == 3 else LABELS, s) for n, s in zip(NAMES, shapes, strict=True)}


DATASETS = {
    d.name: d
    for d in (
        Dataset(
            "mnist",
            "MNIST",
            "MNIST",
            # the first is the one torchvision uses
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            "content",
            {
                "train-images-idx3-ubyte": {"md5": "6bbc9ace898e44ae57da46a324031adb"},
                "train-labels-idx1-ubyte": {"md5": "a25bea736e30d166cdddb491f175f624"},
                "t10k-images-idx3-ubyte": {"md5": "2646ac647ad5339dbf082846283269ea"},
                "t10k-labels-idx1-ubyte": {"md5": "27ae3e4e09519cfbb04c329615203637"},
            },
            tuple("0123456789"),
            0.1307,  # as in the seed
            0.3081,
        ),
        # Checksums of the .gz files, two published sets, either of which verifies a file:
        # SHA-256 from TensorFlow Datasets (tensorflow_datasets/url_checksums/fashion_mnist.txt),
        # MD5 from the authors' README (github.com/zalandoresearch/fashion-mnist), as torchvision
        # checks them (torchvision/datasets/mnist.py, FashionMNIST.resources).
        Dataset(
            "fashion-mnist",
            "Fashion-MNIST",
            "FashionMNIST",
            (
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ),
            "download",
            {
                "train-images-idx3-ubyte": {
                    "sha256": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "md5": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                },
                "train-labels-idx1-ubyte": {
                    "sha256": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "md5": "25c81989df183df01b3e8a0aad5dffbe",
                },
                "t10k-images-idx3-ubyte": {
                    "sha256": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "md5": "bef4ecab320f06d8554ea6380940ec79",
                },
                "t10k-labels-idx1-ubyte": {
                    "sha256": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    "md5": "bb300cfdad3c16e7a12a480ee83cd310",
                },
            },
            (
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            # the training images' statistics as commonly quoted with torchvision
            # (transforms.Normalize((0.2860,), (0.3530,))); lenet5 did not measure them itself
            0.2860,
            0.3530,
        ),
        # SHA-256 from TensorFlow Datasets (tensorflow_datasets/url_checksums/kmnist.txt), MD5 as
        # torchvision checks them (torchvision/datasets/mnist.py, KMNIST.resources); of the .gz files.
        Dataset(
            "kmnist",
            "KMNIST",
            "KMNIST",
            ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            "download",
            {
                "train-images-idx3-ubyte": {
                    "sha256": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                    "md5": "bdb82020997e1d708af4cf47b453dcf7",
                },
                "train-labels-idx1-ubyte": {
                    "sha256": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                    "md5": "e144d726b3acfaa3e44228e80efcd344",
                },
                "t10k-images-idx3-ubyte": {
                    "sha256": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                    "md5": "5c965bf0a639b31b8f53240b1b52f4d7",
                },
                "t10k-labels-idx1-ubyte": {
                    "sha256": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                    "md5": "7320c461ea6c1c855c0b718fb2a4b134",
                },
            },
            # the ten hiragana, romanised as torchvision names them (KMNIST.classes)
            ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            # as commonly quoted with torchvision (transforms.Normalize((0.1918,), (0.3483,)))
            0.1918,
            0.3483,
        ),
    )
}
DIGITS = "mnist"  # the one set of digits: "not a digit", numbers and picture files are about it


def get(name: str) -> Dataset:
    """The set called `name` (a --dataset value); an unknown name is an error listing the known."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"--dataset {name!r}: choose one of {', '.join(DATASETS)}") from None
