"""Stage 3, face references (MAGREF Appendix B.3), one concept per module:

* ``config``: the stage's settings (``faces.*`` keys), per-backend thresholds;
* ``detect``: the backend interface and InsightFace through ``FaceAnalysis``;
  ``dlib_backend``: the dlib alternative; ``tiny_pack``: the generated offline pack;
* ``pose``: yaw, pitch, roll from landmarks (``solvePnP``); ``quality``: the aligned
  crop, blur and the filters; ``measure``: one row per detected face;
* ``identities``: clustering and joining; ``select``: ranking and the pose-spanning
  choice; ``references``: one clip's faces -> identities, ranks, references;
* ``steps``: the three pipeline operators; ``synthetic``: face videos for tests.
"""
