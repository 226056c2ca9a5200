"""The benchmarks: ``bench quality`` (against retraining and baseline detectors) and ``bench perf`` (speed, memory)."""
