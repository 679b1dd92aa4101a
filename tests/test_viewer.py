"""`bratsseg view` (NiiVue in the browser, served from 127.0.0.1) and `bratsseg report` (one HTML page)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bratsseg.data.synthetic import make_synthetic_case
from bratsseg.io.discovery import find_case
from bratsseg.viewer.server import NIIVUE, build_page, start_server

ARTEFACTS = Path(os.environ.get("BRATSSEG_ARTEFACTS", Path(__file__).parent / "artefacts"))
CHROMIUM = next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


@pytest.fixture
def viewed_case(tmp_path):
    """A synthetic case with its segmentation, and a 'prediction' that is a copy of it."""
    case = make_synthetic_case(tmp_path / "raw", "View_001", "brats2021", size="small", seed=4)
    pred = tmp_path / "pred" / "View_001.nii.gz"
    pred.parent.mkdir()
    shutil.copy(case.seg, pred)
    return case.folder, pred


def test_view_serves_the_page_the_viewer_and_only_the_named_files(viewed_case):
    folder, pred = viewed_case
    page = build_page(folder, pred.parent, truth=True)
    assert page.config["dice"] == {"WT": 1.0, "TC": 1.0, "ET": 1.0} and page.config["labels"]["ET"] == 4
    server, url = start_server(page)
    try:
        assert url.startswith("http://127.0.0.1:") and server.server_address[0] == "127.0.0.1"
        status, body = _get(url)
        assert status == 200 and b"niivue.umd.js" in body and b"View_001" in body
        assert b"http://" not in body and b"https://" not in body  # nothing fetched from elsewhere
        assert _get(url + "niivue.umd.js") == (200, NIIVUE.read_bytes())
        case = find_case(folder)
        assert _get(url + "files/flair.nii.gz") == (200, case.images[0].read_bytes())
        assert _get(url + "files/pred.nii.gz") == (200, pred.read_bytes())
        assert _get(url + "files/truth.nii.gz")[0] == 200
        for bad in (
            "files/../files/flair.nii.gz",
            "files/%2e%2e/%2e%2e/etc/passwd",
            "../../etc/passwd",
            "files/",
            "files/seg.nii.gz",
            "files/" + str(case.images[0]),
            "static/view.html",
        ):
            assert _get(url + bad)[0] == 404, bad
        raw = subprocess.run(  # a literal "..", which urllib would normalise away
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", url + "files/../etc/passwd"],
            capture_output=True,
            text=True,
        )
        if raw.returncode == 0:
            assert raw.stdout == "404"
    finally:
        server.shutdown()


def _get_with(url: str, host: str | None = None, path: str | None = None) -> int:
    """The status of a GET with another Host header or another path on the same server."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("GET", path if path is not None else parts.path, skip_host=True)
    conn.putheader("Host", host or parts.netloc)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_view_refuses_other_hosts_and_requests_without_the_token(viewed_case):
    """DNS rebinding: a page on evil.example rebound to 127.0.0.1 sends Host: evil.example; a request that does not
    carry the printed URL's token is refused too."""
    folder, pred = viewed_case
    server, url = start_server(build_page(folder, pred.parent))
    try:
        port = server.server_address[1]
        token_path = url.split(str(port), 1)[1]
        assert _get_with(url) == 200 and _get_with(url, host=f"localhost:{port}") == 200
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}"):
            assert _get_with(url, host=host) == 403, host
            assert _get_with(url + "files/flair.nii.gz", host=host) == 403, host
        for path in ("/", "/files/flair.nii.gz", "/niivue.umd.js", "/x" + token_path, token_path[:-2] + "/"):
            assert _get_with(url, path=path) == 403, path
        assert len(token_path.strip("/")) >= 24
    finally:
        server.shutdown()


def test_view_serves_no_file_behind_a_link_that_is_not_nifti(viewed_case, tmp_path):
    folder, pred = viewed_case
    case = find_case(folder)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    t2 = case.images[3]
    t2.unlink()
    t2.symlink_to(secret)
    from bratsseg.errors import BratsSegError

    with pytest.raises(BratsSegError, match="not NIfTI"):
        build_page(folder, pred.parent)
    # a link to a real NIfTI file is fine (datasets are often linked) ...
    real_t2 = tmp_path / "real_t2.nii.gz"
    shutil.copy(case.images[0], real_t2)
    t2.unlink()
    t2.symlink_to(real_t2)
    page = build_page(folder, pred.parent)
    server, url = start_server(page)
    try:
        assert _get(url + "files/t2.nii.gz") == (200, real_t2.read_bytes())
        # ... but swapped for another file after the page was built, it is no longer served
        real_t2.unlink()
        real_t2.symlink_to(secret)
        status, body = _get(url + "files/t2.nii.gz")
        assert status == 404 and b"root:" not in body
    finally:
        server.shutdown()


def test_view_command_prints_its_url_and_serves_until_stopped(viewed_case):
    folder, pred = viewed_case
    proc = subprocess.Popen(
        [sys.executable, "-m", "bratsseg", "view", str(folder), "--pred", str(pred), "--no-browser"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/[\w-]+/", line).group(0)
        assert _get(url)[0] == 200 and _get(url + "files/pred.nii.gz")[0] == 200
        assert _get(url + "files/truth.nii.gz")[0] == 404  # --truth not given
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_report_is_one_self_contained_page(viewed_case, tmp_path):
    from bratsseg.cli.main import main
    from bratsseg.engine.evaluate import evaluate_files

    folder, pred = viewed_case
    results = tmp_path / "results"
    shutil.copytree(pred.parent, results / "predictions")
    evaluate_files(results / "predictions", folder.parent, results / "eval")
    (results / "report.md").write_text("# A run\n\nSome **bold** text.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert main(["report", str(results)]) == 0
    page = (results / "report.html").read_text()
    assert "<h1>A run</h1>" in page and "<b>bold</b>" in page and "<td>1</td>" in page
    assert "Evaluation: eval" in page and 'href="predictions/View_001.nii.gz"' in page and "1.000" in page
    assert "http://" not in page and "https://" not in page
    with pytest.raises(SystemExit):
        main(["report"])


def test_report_links_cases_to_predictions_kept_beside_the_results(viewed_case, tmp_path, monkeypatch):
    """The quick start: `predict -o predictions`, `evaluate --pred predictions -o results`, `report results`."""
    from bratsseg.cli.main import main
    from bratsseg.engine.evaluate import evaluate_files

    folder, pred = viewed_case
    monkeypatch.chdir(tmp_path)
    shutil.copytree(pred.parent, tmp_path / "predictions")
    evaluate_files("predictions", folder.parent, "results")
    assert main(["report", "results"]) == 0
    page = (tmp_path / "results" / "report.html").read_text()
    assert f'href="../predictions/{pred.name}"' in page


def _screenshot(url: str, out: Path, size: str = "1400,800") -> np.ndarray:
    """A headless-Chromium screenshot of ``url`` (WebGL on SwiftShader) after 20 s of page time, as RGB."""
    import matplotlib.image

    out.parent.mkdir(parents=True, exist_ok=True)
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
           f"--window-size={size}", "--virtual-time-budget=20000", f"--screenshot={out}", url]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=180, check=True)
    return np.asarray(matplotlib.image.imread(out))[..., :3] * 255


def _label_colour_pixels(rgb: np.ndarray) -> dict[str, int]:
    """Pixels of the BraTS colours (blended over grey at the page's 60% opacity) below the page's header."""
    r, g, b = (rgb[40:, :, i].astype(float) for i in range(3))
    return {
        "NCR red": int(np.sum((r - np.maximum(g, b)) > 60)),
        "ED green": int(np.sum((g - np.maximum(r, b)) > 50)),
        "ET yellow": int(np.sum((np.minimum(r, g) - b > 80) & (np.abs(r - g) < 60))),
    }


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")


@pytest.mark.browser
@needs_chromium
def test_viewer_draws_the_case_and_its_labels_in_chromium(viewed_case):
    folder, pred = viewed_case
    server, url = start_server(build_page(folder, pred, truth=True))
    try:
        rgb = _screenshot(url, ARTEFACTS / "viewer_synthetic.png")
    finally:
        server.shutdown()
    canvas = rgb[40:]
    assert canvas.std() > 20  # not blank: NiiVue drew the volumes
    colours = _label_colour_pixels(rgb)
    assert all(n > 100 for n in colours.values()), colours


@pytest.mark.browser
@pytest.mark.realdata
@needs_chromium
def test_viewer_on_a_real_case_with_prediction_and_truth(real_brats, tmp_path):
    """The README's screenshot: the bundled model's prediction beside the truth on a real case."""
    from bratsseg.engine.predict import predict

    case = real_brats / "BraTS2021_00006"
    report = predict([case], tmp_path / "pred")
    server, url = start_server(build_page(case, report.written[0], truth=True))
    try:
        rgb = _screenshot(url, ARTEFACTS / "viewer_real.png")
    finally:
        server.shutdown()
    assert rgb[40:].std() > 20
    colours = _label_colour_pixels(rgb)
    assert all(n > 100 for n in colours.values()), colours


@pytest.mark.browser
@needs_chromium
def test_report_renders_in_chromium(viewed_case, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bratsseg.engine.evaluate import evaluate_files
    from bratsseg.viewer.report import write_report

    folder, pred = viewed_case
    results = tmp_path / "results"
    shutil.copytree(pred.parent, results / "predictions")
    evaluate_files(results / "predictions", folder.parent, results / "eval")
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(np.stack([np.full((20, 20), 1.0), np.zeros((20, 20)), np.zeros((20, 20))], axis=-1))  # a red figure
    fig.savefig(results / "figure.png")
    plt.close(fig)
    page = write_report(results)
    rgb = _screenshot(page.resolve().as_uri(), ARTEFACTS / "report.png", "1100,1400")
    assert rgb.std() > 20
    assert _label_colour_pixels(rgb)["NCR red"] > 100  # the embedded figure is shown
