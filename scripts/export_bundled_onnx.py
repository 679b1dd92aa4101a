"""Re-export the bundled model's ONNX files from its shipped weights (the model and each cross-validation fold):
what a change of the exported graph needs, without re-training.

    python scripts/export_bundled_onnx.py [MODEL_FOLDER]      (default: the bundled model)
"""

from __future__ import annotations

import sys
from pathlib import Path

from bratsseg.compress.onnx_export import export_model_folder
from bratsseg.models.bundled import default_model_path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else default_model_path()
    for path in export_model_folder(folder):
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
