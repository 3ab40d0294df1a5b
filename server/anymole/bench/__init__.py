"""Benchmark runners and their report writers (`anymole bench …`; the figures land in docs/benchmarks*).

    video.py          `anymole bench video`: ICAdapt and two-stage sampling speed of the video prior
    video_summary.py  headline figures from the raw runs; merging runs
    video_report.py   the "Video prior" section of docs/benchmarks.md and the results JSON
    capacity.py       `anymole bench capacity`: queueing simulation of animators' fills on a pool of GPUs
    capacity_inputs.py  its service times, from docs/benchmarks/pipeline.json or the per-stage benchmarks
    capacity_report.py  docs/scaling.md and docs/benchmarks/capacity.json
"""
