"""Everything denoise writes and reads: checkpoints, stage files, streaming, atomic writes, provenance."""
