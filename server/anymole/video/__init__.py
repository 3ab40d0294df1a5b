"""AnyMoLe's video stage: a video diffusion prior behind one protocol, ICAdapt, two-stage guided sampling.

Stages (plain functions over tensors that report through an `anymole.progress.OnStep`):
    scene.py       `render_scene`: the job's context and keys rendered once, with 2D joints, depths, masks
    generate.py    `generate_video`: `adapted` (ICAdapt or the cache, weights restored) then `sample_video`
    icadapt.py     ICAdapt (Algorithm 1) on clips of the context renders (clips.py)
    sampler.py     `TwoStageSampler` (Algorithm 2) over any `VideoPrior`

Around them: timeline.py (request ↔ 30 fps render timeline), config.py (`VideoJobConfig` and stage costs),
cache.py (adapted weights on disk), snapshot.py (host copies that restore a prior), caption.py, mp4.py,
schedule.py (`DDIMSchedule`), attention.py (the one attention kernel).

The model: prior.py (`VideoPrior`, the protocol), dynamicrafter.py (`DynamiCrafterPrior`, built from
unet3d.py, vae.py, openclip.py, resampler.py), weights.py (the official checkpoint ↔ our state dict,
`load_pretrained`), hub.py (downloads).
"""
