"""MAGREF weights on disk: our checkpoints (``checkpoint.py``), Wan's key names
(``wan_keys.py``), the release converter (``release.py``) and LoRA files (``lora.py``)."""
