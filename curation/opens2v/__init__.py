"""OpenS2V-5M (OpenS2V-Nexus) in and out of our tables.

``layout`` reads their files (part JSON, RLE masks, pair lists) with errors that name the
file and field; ``references`` turns one key into our rows (clip, object cut-outs,
generated views and background as ``pairs``); ``export`` writes our run in their layout.
No Ray here: ``pipelines/import_opens2v.py`` and ``pipelines/export.py`` are the jobs.
"""
