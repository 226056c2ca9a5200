"""Images/s of the candidate JPEG decoders on the same files, one process, each decoded to (3, 224, 224) uint8.

    python benchmarks/decoders.py DIR [N]     # DIR: a folder of JPEGs (e.g. bench scale's images-N)

Pillow (full decode, and with JPEG draft reduction where it leaves both sides >= 224, as
denoise.cli.data.images does) against torchvision.io.decode_jpeg (deprecated in torchvision 0.29 in favour of
TorchCodec, which is not installed here). Prints one JSON object.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2 import functional

SIZE = 224


def pillow(file, draft):
    with Image.open(file) as image:
        if draft:
            image.draft("RGB", (SIZE, SIZE))
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    return functional.resize(pixels, [SIZE, SIZE], antialias=True)


def torchvision_io(file):
    return functional.resize(decode_jpeg(read_file(str(file)), mode=ImageReadMode.RGB), [SIZE, SIZE], antialias=True)


def rate(decode, files, repeats=3):
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for file in files:
            decode(file)
        best = max(best, len(files) / (time.perf_counter() - started))
    return best


if __name__ == "__main__":
    torch.set_num_threads(1)
    files = sorted(Path(sys.argv[1]).rglob("*.jpg"))[: int(sys.argv[2]) if len(sys.argv) > 2 else 200]
    with Image.open(files[0]) as first:
        shape = first.size
    print(json.dumps({"files": len(files), "image_size": shape, "images_per_s": {
        "pillow": rate(lambda f: pillow(f, False), files),
        "pillow_draft": rate(lambda f: pillow(f, True), files),
        "torchvision_io": rate(torchvision_io, files)}}))
