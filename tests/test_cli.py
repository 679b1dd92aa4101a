import json
import subprocess
import sys

from bratsseg.cli.main import main


def test_info_table_and_json(synthetic_root, capsys):
    assert main(["info", str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    assert "4 case(s) (raw), 0 problem(s)" in out
    assert "Synth-GLI-000" in out and "brats2023" in out and "LPS" in out
    assert main(["info", "--json", str(synthetic_root / "Synth_000")]) == 0
    info = json.loads(capsys.readouterr().out)
    (case,) = info["cases"]
    assert case["shape"] == [48, 48, 32] and case["region_voxels"]["WT"] > 0


def test_preprocess_then_info_on_cache(synthetic_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["preprocess", str(synthetic_root), "-o", str(cache), "--workers", "2"]) == 0
    assert "4 case(s) written" in capsys.readouterr().out
    assert main(["preprocess", str(synthetic_root), "-o", str(cache)]) == 0
    assert "4 already cached" in capsys.readouterr().out
    assert main(["info", str(cache)]) == 0
    assert "(cache)" in capsys.readouterr().out


def test_synth_command(tmp_path, capsys):
    assert main(["synth", "-o", str(tmp_path), "-n", "2", "--naming", "brats2023", "--size", "tiny"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Synth-GLI-000", "Synth-GLI-001"]


def test_info_with_a_bad_case_reports_it(fresh_root, capsys):
    (fresh_root / "Synth_000" / "Synth_000_flair.nii.gz").write_bytes(b"garbage")
    assert main(["info", str(fresh_root)]) == 1
    out = capsys.readouterr().out
    assert "3 case(s)" in out and "problem: " in out and "Synth_000_flair.nii.gz" in out


def test_missing_path_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bratsseg", "info", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such file or folder"


def test_help_is_fast_and_lazy():
    code = "import sys; from bratsseg.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
