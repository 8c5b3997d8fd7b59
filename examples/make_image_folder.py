"""Write a folder of PNG images in class sub-folders, the layout
``keras.utils.image_dataset_from_directory`` reads, from Fashion-MNIST (Debian package
``dataset-fashion-mnist``): ``FOLDER/train/CLASS/*.png`` and ``FOLDER/test/CLASS/*.png``.

    python examples/make_image_folder.py clothes --train 3000 --test 1000

It stands in for a user's own images: any folder of that layout works with ``--dataset FOLDER``.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lrbs_tf.data.fashion_mnist import _candidate_dirs, _load_fashion_mnist_idx  # noqa: E402

CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "boot")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--train", type=int, default=3000, help="training images (default 3000)")
    parser.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    args = parser.parse_args()
    arrays = next((a for _, d in _candidate_dirs(None) if (a := _load_fashion_mnist_idx(d))), None)
    if arrays is None:
        sys.exit(
            "make_image_folder.py: Fashion-MNIST not found: apt-get install dataset-fashion-mnist"
        )
    rng = np.random.default_rng(0)
    for part, count in (("train", args.train), ("test", args.test)):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        for i in rng.permutation(len(labels))[:count]:
            folder = os.path.join(args.folder, part, CLASSES[labels[i]])
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(images[i]).save(os.path.join(folder, f"{i:05d}.png"))
    print(f"wrote {args.train} + {args.test} PNG images to {args.folder}/train and /test")


if __name__ == "__main__":
    main()
