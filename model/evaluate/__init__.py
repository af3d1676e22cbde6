"""Evaluation: the paper's metrics (Appendix C.3) and OpenS2V-Eval's, from references + prompts.

``python -m model.evaluate`` scores a folder of generated videos (``__main__.py``);
``pipelines/evaluate_videos.py`` runs the same ``scorer.Evaluator`` as a resumable Ray Data
job. One metric a module; their model roles are registered in ``model/roles.py``.
"""
