"""The model shipped inside the package: what `bratsseg predict` uses when no ``--model`` is given.

``brats3d/`` is a bratsseg model folder (float16 safetensors, a float16-weight whole-case ``model.onnx`` that ONNX
Runtime runs by default, with no PyTorch installed, and model.json; ``folds/*`` the same for each cross-validation
fold, the members of the ``accurate`` mode). How it was trained, on which
cases, and its cross-validated Dice are in its ``model.json`` (``training``, ``bundle``) and in the README.
"""

from __future__ import annotations

from pathlib import Path

from bratsseg.errors import BratsSegError

BUNDLED_NAME = "brats3d"


def default_model_path() -> Path:
    """The bundled model folder; raises :class:`BratsSegError` if this installation lacks it."""
    path = Path(__file__).parent / BUNDLED_NAME
    if not (path / "model.json").is_file():
        raise BratsSegError("this installation has no bundled model; pass --model", path)
    return path
