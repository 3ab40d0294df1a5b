"""Benchmark runners and their report writers (`anymole bench …`; the figures land in docs/benchmarks*).

    video.py          `anymole bench video`: ICAdapt and two-stage sampling speed of the video prior
    video_summary.py  headline figures from the raw runs; merging runs
    video_report.py   the "Video prior" section of docs/benchmarks.md and the results JSON
"""
