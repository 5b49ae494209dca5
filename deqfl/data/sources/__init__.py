"""Built-in data sources; importing this package registers each of them.

One module per source: mnist, fashion_mnist, cifar10, image_folder, digits, synthetic.
"""

from deqfl.data.sources import cifar10, digits, fashion_mnist, image_folder, mnist, synthetic

__all__ = ["cifar10", "digits", "fashion_mnist", "image_folder", "mnist", "synthetic"]
