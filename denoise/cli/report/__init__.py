"""Looking at a run: ``denoise report`` (one HTML page) and ``denoise issues`` (the suspects as CSV)."""
