"""MAGREF training: ``python -m model.train --manifest RUN/samples ...`` (``__main__``).

The loop (``loop.py``, Eq. 8-10) beside what it needs, one concern a module: its command
line (``config.py``), samples -> examples (``data.py``), the resumable batch stream
(``batching.py``), the encoders and the latent cache (``latents.py``, ``latent_cache.py``),
what is trained (``trainable.py``) and how (``optim.py``), training checkpoints
(``checkpoints.py``), the loss log (``log.py``) and the process group (``distributed.py``).
"""
