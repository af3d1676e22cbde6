"""Stage 2: object references (MAGREF Appendix B.2): labels -> GroundingDINO boxes -> SAM2 masks
-> morphology -> filters -> RGBA references. ``pipelines/stage2_objects.py`` wires the steps."""
