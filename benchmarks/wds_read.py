"""Samples/s of reading WebDataset shards: webdataset's own sequential iterator against the tar-header index
that ``wds:`` uses (denoise.cli.data.wds), in order and in a shuffled order (as training reads). One process, bytes
only (no decoding). Prints one JSON object.

    python benchmarks/wds_read.py IMAGE_DIR     # writes shards of IMAGE_DIR's JPEGs to a temporary folder
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset

from denoise.cli.data.wds import _read, index_shard


def best(run, repeats=3):
    top = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        count = run()
        top = max(top, count / (time.perf_counter() - started))
    return top


if __name__ == "__main__":
    files = sorted(Path(sys.argv[1]).rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as folder:
        with webdataset.ShardWriter(f"{folder}/s-%06d.tar", maxcount=100, verbose=0) as sink:
            for k, file in enumerate(files):
                sink.write({"__key__": f"{k:07d}", "jpg": file.read_bytes(), "cls": file.parent.name})
        shards = sorted(str(p) for p in Path(folder).glob("*.tar"))

        def sequential():
            return sum(1 for _ in webdataset.WebDataset(shards, shardshuffle=False))

        started = time.perf_counter()
        places = [(shard, members["jpg"]) for shard in shards for members in index_shard(shard).values()]
        index_seconds = time.perf_counter() - started
        order = np.random.default_rng(0).permutation(len(places))

        def indexed(rows):
            return lambda: sum(1 for r in rows if _read(*places[r]))

        print(json.dumps({"samples": len(places), "shards": len(shards), "index_seconds": index_seconds,
                          "samples_per_s": {"webdataset_sequential": best(sequential),
                                            "index_in_order": best(indexed(range(len(places)))),
                                            "index_shuffled": best(indexed(order))}}))
