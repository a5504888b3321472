"""Run datatrove's four MinHash stages on a JSON-lines file and print the wall time (used by dedup_speed.py,
in a separate virtual environment that has datatrove: it is not a cmtp dependency)."""

import sys
import time

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter

src, work = sys.argv[1], sys.argv[2]
config = MinhashConfig(num_buckets=16, hashes_per_bucket=8, n_grams=5)
started = time.perf_counter()
stages = [
    [JsonlReader(src), MinhashDedupSignature(output_folder=f"{work}/sigs", config=config)],
    [MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=config)],
    [MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/ids", config=config)],
    [JsonlReader(src), MinhashDedupFilter(input_folder=f"{work}/ids"), JsonlWriter(f"{work}/out")],
]
for i, pipeline in enumerate(stages):
    tasks = config.num_buckets if i == 1 else 1
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=f"{work}/logs{i}").run()
print(f"DATATROVE_SECONDS {time.perf_counter() - started:.3f}")
