"""NeuroPictor, rebuilt notebook-first: fMRI -> image reconstruction, reproducible end to end."""
import os

# Offline always: nothing in this project may reach a model hub at run time.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
