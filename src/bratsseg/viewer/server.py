"""`bratsseg view`: a case, its predicted labels and its ground truth in the browser, with NiiVue.

A small HTTP server bound to 127.0.0.1 on a free port serves one page, the NiiVue library shipped in this package
(``static/niivue.umd.js``, BSD-2-Clause, see ``static/NIIVUE_LICENSE.txt``; nothing is fetched from the network)
and exactly the files the user named: the case's four modalities, the prediction and the truth. Every other path,
and any path with ``..`` in it, is answered 404; there is no directory listing.

Two more doors are shut, as Jupyter shuts them: every request must carry the unguessable token that starts the
printed URL's path (``http://127.0.0.1:PORT/TOKEN/``; 403 without it), and its ``Host`` header must name this
server (``127.0.0.1:PORT`` or ``localhost:PORT``; 403 otherwise), so a web page that rebinds its own domain to
127.0.0.1 cannot read the patient's volumes. Each file is checked when the page is built (a regular file, after
following links, that opens as NIfTI) and served only if it is still that same file (device and inode), so a link
swapped for ``/etc/passwd`` afterwards is refused too.
"""

from __future__ import annotations

import html
import json
import os
import secrets
import stat
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import MODALITIES, Case, find_case
from bratsseg.labels import LABEL_COLOURS, REGIONS, colour_rgb

STATIC = Path(__file__).parent / "static"
NIIVUE = STATIC / "niivue.umd.js"
PAGE = STATIC / "view.html"
HOST = "127.0.0.1"


@dataclass
class ViewPage:
    """What one `bratsseg view` serves: ``files`` maps each URL name to the one file it may return, ``identity``
    each file's (device, inode) when it was checked."""

    title: str
    files: dict[str, Path] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, tuple[int, int]] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def add(self, name: str, path: Path) -> None:
        """Allow ``path`` under ``name``: a regular file (links followed) that opens as NIfTI, else a one-line
        error naming it."""
        from bratsseg.io.nifti import open_nifti

        real = path.resolve()
        if not real.is_file():
            raise BratsSegError("not a regular file" + (f" (a link to {real})" if path.is_symlink() else ""), path)
        try:
            open_nifti(real)
        except BratsSegError as err:
            raise BratsSegError(f"will not serve a file that is not NIfTI ({err})", path) from None
        st = real.stat()
        self.files[name] = real
        self.identity[name] = (st.st_dev, st.st_ino)

    def read(self, name: str) -> bytes | None:
        """The file's bytes if it is still the file that was checked, else None."""
        try:
            fd = os.open(self.files[name], os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != self.identity[name] or not stat.S_ISREG(st.st_mode):
                return None
            return f.read()

    def html(self) -> bytes:
        text = PAGE.read_text()
        text = text.replace("{{TITLE}}", html.escape(self.title))
        return text.replace("{{CONFIG}}", json.dumps(self.config).replace("</", "<\\/")).encode()


def _url_name(role: str, path: Path) -> str:
    """``flair.nii.gz``, ``pred.nii`` ...: the role and the file's own NIfTI suffix (NiiVue reads the format from
    the URL)."""
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    return f"{role}{suffix}"


def region_dice(pred: Path, truth: Path, convention: Any) -> dict[str, float]:
    """Dice per region between two label files of the same grid."""
    from bratsseg.io.nifti import check_same_grid, open_nifti, read_array
    from bratsseg.labels import labels_to_regions
    from bratsseg.metrics.overlap import dice

    p, t = open_nifti(pred), open_nifti(truth)
    check_same_grid([truth, pred], [t, p])
    a = labels_to_regions(np.asarray(read_array(p, pred)).astype(np.uint8), convention)
    b = labels_to_regions(np.asarray(read_array(t, truth)).astype(np.uint8), convention)
    return {r: round(float(dice(a[i], b[i])), 4) for i, r in enumerate(REGIONS)}


def build_page(case_dir: str | Path, pred: str | Path | None = None, truth: bool = True) -> ViewPage:
    """The page for one case folder; ``pred`` a label file, or a folder holding ``<case_id>.nii.gz``; ``truth``:
    show the case's segmentation where it has one (side by side with the prediction, with Dice per region)."""
    case: Case = find_case(Path(case_dir))
    page = ViewPage(title=f"bratsseg view: {case.case_id}")
    for modality, path in zip(MODALITIES, case.images, strict=True):
        page.add(_url_name(modality, path), path)
    pred_path = None
    if pred is not None:
        pred_path = Path(pred)
        if pred_path.is_dir():
            pred_path = pred_path / f"{case.case_id}.nii.gz"
        if not pred_path.is_file():
            raise BratsSegError("no such prediction file", pred_path)
        page.add(_url_name("pred", pred_path), pred_path)
    truth_path = case.seg if truth else None
    if truth_path is not None:
        page.add(_url_name("truth", truth_path), truth_path)
    names = {name.split(".")[0]: name for name in page.files}  # role -> URL name
    page.config = {
        "case_id": case.case_id,
        "modalities": {m: names[m] for m in MODALITIES},
        "pred": names.get("pred"),
        "truth": names.get("truth"),
        "labels": {"NCR": case.convention.necrotic, "ED": case.convention.edema, "ET": case.convention.enhancing},
        "colours": {name: colour_rgb(hex_colour) for name, hex_colour in LABEL_COLOURS.items()},
        "dice": region_dice(pred_path, truth_path, case.convention) if pred_path and truth_path else None,
    }
    return page


class _Handler(BaseHTTPRequestHandler):
    page: ViewPage  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints the URL once
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]  # type: ignore[index]  # an (address, port) pair for AF_INET
        if self.headers.get("Host", "") not in (f"{HOST}:{port}", f"localhost:{port}"):
            return self._send(HTTPStatus.FORBIDDEN, b"forbidden: unknown Host", "text/plain")
        path = unquote(urlsplit(self.path).path)
        prefix = f"/{self.page.token}/"
        if not secrets.compare_digest(path[: len(prefix)].encode(), prefix.encode()):
            return self._send(HTTPStatus.FORBIDDEN, b"forbidden: open the URL bratsseg printed", "text/plain")
        path = "/" + path[len(prefix) :]
        if ".." in path or "\\" in path:
            return self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        if path in ("/", "/index.html"):
            return self._send(HTTPStatus.OK, self.page.html(), "text/html; charset=utf-8")
        if path == "/niivue.umd.js":
            return self._send(HTTPStatus.OK, NIIVUE.read_bytes(), "text/javascript")
        if path.startswith("/files/") and path[len("/files/") :] in self.page.files:
            data = self.page.read(path[len("/files/") :])
            if data is None:
                return self._send(HTTPStatus.NOT_FOUND, b"not found: the file changed", "text/plain")
            return self._send(HTTPStatus.OK, data, "application/octet-stream")
        return self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def start_server(page: ViewPage, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``page`` on 127.0.0.1 (``port`` 0: a free one) from a background thread; returns the server (call
    ``shutdown()``) and its URL."""
    handler = type("ViewHandler", (_Handler,), {"page": page})
    try:
        server = ThreadingHTTPServer((HOST, port), handler)
    except OSError as err:
        raise BratsSegError(f"cannot listen on {HOST}:{port} ({err.strerror or err})") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{HOST}:{server.server_address[1]}/{page.token}/"
