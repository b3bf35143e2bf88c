"""Measuring the pipeline: benchmark ranking metrics, span scores, dev signals and throughput."""
