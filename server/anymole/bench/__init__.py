"""Benchmark runners and their report writers (`anymole bench …`; the figures land in docs/benchmarks*).

    video.py          `anymole bench video`: ICAdapt and two-stage sampling speed of the video prior
    video_summary.py  headline figures from the raw runs; merging runs
    video_report.py   the "Video prior" section of docs/benchmarks.md and the results JSON
    pipeline.py       `anymole bench pipeline`: the whole anymole job from a warm server, timed at few steps
    pipeline_report.py  its figures extrapolated to the preset's steps, docs/benchmarks/pipeline.json and its section
    report.py         the results JSON and a docs/benchmarks.md section rewritten in place (every runner's)
    scene_file.py     a character and its clip as a tensor file, for a machine without libassimp
    capacity.py       `anymole bench capacity`: queueing simulation of animators' fills on a pool of GPUs
    capacity_inputs.py  its service times, from docs/benchmarks/pipeline.json or the per-stage benchmarks
    capacity_report.py  docs/scaling.md and docs/benchmarks/capacity.json
"""
