"""Downloads, resume, checksums, safe extraction and ``prepare`` against a real local HTTP server.

The server is a real ``http.server`` on 127.0.0.1 (random free port, one thread) with a small
handler that implements ``Range: bytes=N-`` and counts the body bytes it sends, so resume can be
checked by how much was actually transferred.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import free_port

from xmr.cli.main import main
from xmr.data.download import (NetworkUnreachableError, UnsafeArchiveError, direct_url,
                               download, safe_extract)
from xmr.errors import ChecksumError


# --------------------------------------------------------------------------------------------
# a tiny HTTP server with Range support
# --------------------------------------------------------------------------------------------

class _Server:
    def __init__(self):
        self.files = {}            # url path -> bytes
        self.honour_range = True
        self.sent = 0              # body bytes sent since last reset
        self.requests = []         # (path, Range header)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "not found")
                    return
                rng = self.headers.get("Range")
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if m and server.honour_range:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    chunk = body[start:]
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    chunk = body
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                self.wfile.write(chunk)
                server.sent += len(chunk)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reset(self):
        self.sent = 0
        self.requests.clear()
        self.honour_range = True

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _fresh(server):
    server.reset()
    yield


def sha256_file_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# --------------------------------------------------------------------------------------------
# miniature datasets
# --------------------------------------------------------------------------------------------

def _planted(n, D, L, seed):
    """A random sparse (X, Y) pair with a row without labels and a row without features."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, D, density=0.3, format="csr", random_state=rng, dtype=np.float64)
    X.data = np.round(X.data, 4)  # what the text format holds exactly
    Y = (sp.random(n, L, density=0.25, format="csr", random_state=rng) > 0).astype(np.float64)
    X = X.tolil()
    Y = Y.tolil()
    X[1, :] = 0
    Y[2, :] = 0
    return sp.csr_matrix(X, dtype=np.float32), sp.csr_matrix(Y, dtype=np.float32)


def _xc_text(X, Y) -> str:
    """XC repository BoW text, written independently of xmr's writer."""
    lines = [f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}"]
    for i in range(X.shape[0]):
        labels = ",".join(str(j) for j in sorted(Y[i].indices))
        row = X[i].tocoo()
        feats = " ".join(f"{j}:{v:.4f}" for j, v in sorted(zip(row.col, row.data)))
        lines.append(" ".join(x for x in (labels, feats) if x) if (labels or feats) else "")
    return "\n".join(lines) + "\n"


def _tar_gz(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def eurlex_mini():
    Xtr, Ytr = _planted(12, 9, 7, seed=1)
    Xte, Yte = _planted(5, 9, 7, seed=2)
    archive = _tar_gz({
        "Eurlex/eurlex_train.txt": _xc_text(Xtr, Ytr).encode(),
        "Eurlex/eurlex_test.txt": _xc_text(Xte, Yte).encode(),
    })
    return archive, (Xtr, Ytr, Xte, Yte)


def _assert_same(A, B):
    A, B = sp.csr_matrix(A), sp.csr_matrix(B)
    assert A.shape == B.shape
    assert A.dtype == np.float32
    np.testing.assert_allclose(A.toarray(), B.toarray(), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------

def test_download_verifies_and_renames(server, tmp_path):
    body = bytes(range(256)) * 300
    server.files["/blob.bin"] = body
    digest = sha256_file_bytes(body)
    dest = download(server.url("/blob.bin"), tmp_path / "d" / "blob.bin", sha256=digest,
                    progress=False)
    assert dest.read_bytes() == body
    assert not (tmp_path / "d" / "blob.bin.part").exists()
    assert server.sent == len(body)
    # Present and verified: no second transfer.
    download(server.url("/blob.bin"), dest, sha256=digest, progress=False)
    assert server.sent == len(body)


def test_resume_fetches_only_the_rest(server, tmp_path):
    body = np.random.default_rng(0).bytes(50_000)
    server.files["/big.bin"] = body
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(body[:20_000])
    download(server.url("/big.bin"), dest, sha256=sha256_file_bytes(body), progress=False)
    assert dest.read_bytes() == body
    assert server.sent == 30_000
    assert server.requests == [("/big.bin", "bytes=20000-")]


def test_resume_with_server_ignoring_range_starts_over(server, tmp_path):
    body = np.random.default_rng(1).bytes(10_000)
    server.files["/norange.bin"] = body
    server.honour_range = False
    dest = tmp_path / "norange.bin"
    (tmp_path / "norange.bin.part").write_bytes(b"garbage-prefix")
    download(server.url("/norange.bin"), dest, progress=False)
    assert dest.read_bytes() == body
    assert server.sent == len(body)


def test_complete_part_file_is_accepted_after_416(server, tmp_path):
    body = b"x" * 1000
    server.files["/done.bin"] = body
    dest = tmp_path / "done.bin"
    (tmp_path / "done.bin.part").write_bytes(body)
    download(server.url("/done.bin"), dest, sha256=sha256_file_bytes(body), progress=False)
    assert dest.read_bytes() == body
    assert server.sent == 0


def test_checksum_mismatch_raises_and_removes_the_file(server, tmp_path):
    body = b"not what you expected\n" * 100
    server.files["/bad.bin"] = body
    dest = tmp_path / "bad.bin"
    expected = "0" * 64
    with pytest.raises(ChecksumError) as ei:
        download(server.url("/bad.bin"), dest, sha256=expected, progress=False)
    assert str(ei.value) == (f"{dest}: sha256 mismatch: expected {expected}, "
                             f"got {sha256_file_bytes(body)} (the file was removed)")
    assert not dest.exists()
    assert not (tmp_path / "bad.bin.part").exists()
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_says_what_to_download_by_hand(tmp_path):
    port = free_port()  # nothing listens there any more
    url = f"http://127.0.0.1:{port}/Eurlex.zip"
    dest = tmp_path / "raw" / "Eurlex.zip"
    with pytest.raises(NetworkUnreachableError) as ei:
        download(url, dest, progress=False, timeout=5)
    msg = str(ei.value)
    assert msg.startswith(f"network unreachable: cannot fetch {url} (")
    assert msg.endswith(f"; download {url} by hand and save it as Eurlex.zip in {dest.parent}")
    assert not dest.exists()


def test_http_error_is_a_clear_download_error(server, tmp_path):
    from xmr.data.download import DownloadError
    with pytest.raises(DownloadError, match=r"HTTP 404 \(.*\) while fetching .*/missing.zip"):
        download(server.url("/missing.zip"), tmp_path / "m.zip", progress=False)


def test_google_drive_links_are_rewritten_to_the_direct_endpoint():
    expect = ("https://drive.usercontent.google.com/download?id=0B3lPMIHmG6vGU0VTR1pCejFpWjg"
              "&export=download&confirm=t")
    assert direct_url("https://drive.google.com/uc?export=download&id="
                      "0B3lPMIHmG6vGU0VTR1pCejFpWjg") == expect
    assert direct_url("https://drive.google.com/file/d/0B3lPMIHmG6vGU0VTR1pCejFpWjg/view"
                      "?usp=sharing") == expect
    assert direct_url("http://example.org/a.zip") == "http://example.org/a.zip"


# --------------------------------------------------------------------------------------------
# safe extraction
# --------------------------------------------------------------------------------------------

def _tar_with(tmp_path, name, infos):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tf:
        for ti, data in infos:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"payload\n"):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    return ti, data


def _link(name, target, kind=tarfile.SYMTYPE):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = target
    return ti, None


def _nothing_written(tmp_path, target):
    assert not target.exists() or list(target.rglob("*")) == []
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_tar_and_zip(tmp_path):
    members = {"d/a.txt": b"A", "d/sub/b.txt": b"BB"}
    for name, blob in (("a.tar.gz", _tar_gz(members)), ("a.zip", _zip(members))):
        arc = tmp_path / name
        arc.write_bytes(blob)
        out = tmp_path / f"out-{name}"
        written = safe_extract(arc, out)
        assert sorted(p.relative_to(out).as_posix() for p in written) == ["d/a.txt", "d/sub/b.txt"]
        assert (out / "d/sub/b.txt").read_bytes() == b"BB"


def test_internal_symlink_is_allowed(tmp_path):
    arc = _tar_with(tmp_path, "ok.tar.gz", [_file("d/real.txt"), _link("d/alias", "real.txt")])
    out = tmp_path / "out"
    safe_extract(arc, out)
    assert (out / "d" / "alias").read_bytes() == b"payload\n"


def test_refuses_dotdot_member(tmp_path):
    arc = _tar_with(tmp_path, "dotdot.tar.gz", [_file("fine.txt"), _file("../evil.txt")])
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as ei:
        safe_extract(arc, target)
    assert str(ei.value) == (f"refusing to extract {arc}: member '../evil.txt' has a '..' "
                             f"component")
    _nothing_written(tmp_path, target)


def test_refuses_absolute_member(tmp_path):
    evil = tmp_path / "evil.txt"
    arc = _tar_with(tmp_path, "abs.tar.gz", [_file("fine.txt"), _file(str(evil))])
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as ei:
        safe_extract(arc, target)
    assert str(ei.value) == (f"refusing to extract {arc}: member {str(evil)!r} has an "
                             f"absolute path")
    _nothing_written(tmp_path, target)


def test_refuses_symlink_escaping_the_target(tmp_path):
    arc = _tar_with(tmp_path, "link.tar.gz",
                    [_file("fine.txt"), _link("d/escape", "../../evil.txt"),
                     _file("d/escape", b"overwrite through the link")])
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as ei:
        safe_extract(arc, target)
    assert str(ei.value) == (f"refusing to extract {arc}: member 'd/escape' is a symlink "
                             f"pointing outside the target ('../../evil.txt')")
    _nothing_written(tmp_path, target)


def test_refuses_absolute_symlink_hardlink_and_device(tmp_path):
    target = tmp_path / "target"
    cases = [
        (_link("abs", "/etc/passwd"),
         "member 'abs' is a symlink pointing outside the target ('/etc/passwd')"),
        (_link("hard", "../evil.txt", tarfile.LNKTYPE),
         "member 'hard' is a hard link pointing outside the target ('../evil.txt')"),
    ]
    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    cases.append(((dev, None), "member 'dev/null' is a device file or FIFO"))
    for i, (member, msg) in enumerate(cases):
        arc = _tar_with(tmp_path, f"case{i}.tar.gz", [_file("fine.txt"), member])
        with pytest.raises(UnsafeArchiveError) as ei:
            safe_extract(arc, target)
        assert str(ei.value) == f"refusing to extract {arc}: {msg}"
        _nothing_written(tmp_path, target)


def test_refuses_zip_dotdot_member(tmp_path):
    arc = tmp_path / "evil.zip"
    arc.write_bytes(_zip({"fine.txt": b"ok", "../evil.txt": b"bad"}))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as ei:
        safe_extract(arc, target)
    assert str(ei.value) == (f"refusing to extract {arc}: member '../evil.txt' has a '..' "
                             f"component")
    _nothing_written(tmp_path, target)


def test_not_an_archive(tmp_path):
    p = tmp_path / "plain.txt"
    p.write_text("hello")
    with pytest.raises(UnsafeArchiveError) as ei:
        safe_extract(p, tmp_path / "t")
    assert str(ei.value) == (f"{p}: expected a zip or tar(.gz/.bz2/.xz) archive, got a file "
                             f"of another kind")


# --------------------------------------------------------------------------------------------
# prepare / load_prepared
# --------------------------------------------------------------------------------------------

@pytest.fixture
def formats():
    """The format readers/writers (xmr.data.formats) that prepare/load_prepared build on."""
    import xmr.data.formats

    return xmr.data.formats


def test_prepare_through_cli_url_override_round_trips(server, tmp_path, eurlex_mini, capsys, formats):
    from xmr.data.prepare import load_prepared

    archive, (Xtr, Ytr, Xte, Yte) = eurlex_mini
    server.files["/mirror/Eurlex.tar.gz"] = archive
    root = tmp_path / "data"
    rc = main(["data", "prepare", "eurlex-4k", "--root", str(root),
               "--url-override", server.url("/mirror/Eurlex.tar.gz")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "EURLex-4K prepared in" in out
    folder = root / "EURLex-4K"
    for f in ("X_trn.npz", "Y_trn.npz", "X_tst.npz", "Y_tst.npz", "meta.json"):
        assert (folder / f).is_file()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["name"] == "EURLex-4K"
    assert (meta["prop_a"], meta["prop_b"]) == (0.55, 1.5)
    assert meta["sources"] == [server.url("/mirror/Eurlex.tar.gz")]
    assert meta["sha256_seen"] == {"Eurlex.zip": sha256_file_bytes(archive)}
    assert meta["stats"]["n_train"] == 12 and meta["stats"]["num_labels"] == 7
    assert meta["stats"]["labels_per_point"] == pytest.approx(Ytr.nnz / 12)
    assert "xmr_version" in meta

    ds = load_prepared("EURLEX-4K", root=root)
    for got, want in ((ds.X_trn, Xtr), (ds.Y_trn, Ytr), (ds.X_tst, Xte), (ds.Y_tst, Yte)):
        _assert_same(got, want)
    assert (ds.prop_a, ds.prop_b) == (0.55, 1.5)

    # Already prepared: a second plain prepare does no network access at all.
    server.reset()
    assert main(["data", "prepare", "EURLex-4K", "--root", str(root)]) == 0
    assert server.requests == []
    assert main(["data", "list", "--root", str(root)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^EURLex-4K .* yes$", table, re.M)
    assert re.search(r"^Amazon-670K .* no$", table, re.M)


def test_prepare_uses_files_placed_by_hand_without_network(tmp_path, eurlex_mini, formats):
    from xmr.data.prepare import load_prepared, prepare

    archive, (Xtr, Ytr, Xte, Yte) = eurlex_mini
    raw = tmp_path / "EURLex-4K" / "raw"
    raw.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        tf.extractall(raw, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(raw)
    folder = prepare("EURLex-4K", root=tmp_path, progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["sha256_seen"]) == {"Eurlex/eurlex_train.txt", "Eurlex/eurlex_test.txt"}
    _assert_same(load_prepared("EURLex-4K", root=tmp_path).Y_tst, Yte)


def test_prepare_unreachable_names_the_folder(tmp_path, capsys):
    port = free_port()
    url = f"http://127.0.0.1:{port}/Eurlex.zip"
    rc = main(["data", "prepare", "EURLex-4K", "--root", str(tmp_path),
               "--url-override", url])
    assert rc == 1
    err = capsys.readouterr().err
    raw = tmp_path / "EURLex-4K" / "raw"
    # The OS's wording of "connection refused" varies; the rest is exact.
    err = re.sub(r"\(127\.0\.0\.1:\d+: [^)]*\)", "(REASON)", err, count=1)
    assert err == (f"xmr data: error: EURLex-4K: network unreachable (REASON); download "
                   f"https://drive.google.com/uc?export=download&id=0B3lPMIHmG6vGU0VTR1pCejFpWjg "
                   f"(or the mirror https://drive.google.com/uc?export=download&id="
                   f"1xWW1UykQBTD2IorVn7V8XubJatQDScol) as Eurlex.zip by hand into {raw} (or "
                   f"put its extracted files eurlex_train.txt, eurlex_test.txt there), then run "
                   f"`xmr data prepare EURLex-4K --root {tmp_path}` again\n")


def test_prepare_refuses_unsafe_archive_and_writes_nothing(server, tmp_path, formats):
    from xmr.data.prepare import prepare

    server.files["/evil.tar.gz"] = _tar_gz({"Eurlex/eurlex_train.txt": b"1 1 1\n0 0:1\n",
                                            "../evil.txt": b"bad"})
    with pytest.raises(UnsafeArchiveError, match="member '../evil.txt' has a '..' component"):
        prepare("EURLex-4K", root=tmp_path, url_override=server.url("/evil.tar.gz"),
                progress=False)
    raw = tmp_path / "EURLex-4K" / "raw"
    assert not (raw / "extracted").exists()
    assert [p.name for p in raw.iterdir()] == ["Eurlex.zip"]
    assert not (tmp_path / "EURLex-4K" / "meta.json").exists()
    assert not (tmp_path / "EURLex-4K" / "evil.txt").exists()


def _json_gz(recs) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in recs).encode())


def test_prepare_label_feature_dataset(server, tmp_path, formats):
    from xmr.data.prepare import load_prepared

    trn = [{"uid": f"t{i}", "title": t, "content": "", "target_ind": ti} for i, (t, ti) in
           enumerate([("red apple pie", [0, 2]), ("green apple", [0]), ("blue car", [1, 3]),
                      ("fast red car", [1])])]
    tst = [{"uid": "s0", "title": "red car", "content": "", "target_ind": [1]},
           {"uid": "s1", "title": "apple unknownword", "content": "", "target_ind": [0, 2]}]
    lbl = [{"uid": f"l{j}", "title": t, "content": ""} for j, t in
           enumerate(["apple", "car", "pie", "blue thing"])]
    d = "LF-AmazonTitles-131K/"
    server.files["/lf.zip"] = _zip({d + "trn.json.gz": _json_gz(trn),
                                    d + "tst.json.gz": _json_gz(tst),
                                    d + "lbl.json.gz": _json_gz(lbl),
                                    d + "filter_labels_train.txt": b"0 2\n",
                                    d + "filter_labels_test.txt": b"1 2\n0 3\n"})
    assert main(["data", "prepare", "LF-AmazonTitles-131K", "--root", str(tmp_path),
                 "--url-override", server.url("/lf.zip")]) == 0
    ds = load_prepared("lf-amazontitles-131k", root=tmp_path)
    assert ds.Y_trn.shape == (4, 4) and ds.Y_tst.shape == (2, 4)
    np.testing.assert_array_equal(ds.Y_trn.toarray(),
                                  [[1, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0]])
    np.testing.assert_array_equal(ds.Y_tst.toarray(), [[0, 1, 0, 0], [1, 0, 1, 0]])
    # TF-IDF fit on train titles: the vocabulary is the train words, rows are L2-normalised.
    assert ds.X_trn.shape == (4, 7) and ds.X_tst.shape == (2, 7)  # red apple pie green blue car fast
    assert ds.X_tst[0].nnz == 2
    np.testing.assert_allclose(np.sqrt(ds.X_trn.multiply(ds.X_trn).sum(axis=1)).ravel(), 1,
                               rtol=1e-5)
    assert ds.X_tst[1].nnz == 1  # "unknownword" is not in the train vocabulary
    np.testing.assert_array_equal(ds.filter_pairs, [[1, 2], [0, 3]])
    assert list(ds.label_names) == ["apple", "car", "pie", "blue thing"]
    assert (ds.prop_a, ds.prop_b) == (0.6, 2.6)


def test_load_prepared_before_prepare_says_what_to_run(tmp_path):
    from xmr.data.prepare import NotPreparedError
    from xmr.data.prepare import load_prepared

    with pytest.raises(NotPreparedError) as ei:
        load_prepared("Amazon-670K", root=tmp_path)
    assert str(ei.value) == (f"Amazon-670K is not prepared in {tmp_path / 'Amazon-670K'}; run "
                             f"`xmr data prepare Amazon-670K --root {tmp_path}`")


def test_url_override_replaces_an_earlier_archive(server, tmp_path, eurlex_mini, formats):
    from xmr.data.prepare import load_prepared, prepare

    archive, (Xtr, Ytr, Xte, Yte) = eurlex_mini
    raw = tmp_path / "EURLex-4K" / "raw"
    raw.mkdir(parents=True)
    (raw / "Eurlex.zip").write_bytes(_tar_gz({"Eurlex/eurlex_train.txt": b"1 1 1\n0 0:1\n",
                                              "Eurlex/eurlex_test.txt": b"1 1 1\n0 0:1\n"}))
    server.files["/v2.tar.gz"] = archive
    prepare("EURLex-4K", root=tmp_path, url_override=server.url("/v2.tar.gz"), progress=False)
    assert server.sent == len(archive)
    _assert_same(load_prepared("EURLex-4K", root=tmp_path).X_trn, Xtr)


@pytest.mark.slow
def test_prepare_embedded_debian_deps(tmp_path, formats):
    from xmr.data.prepare import load_prepared, prepare

    folder = prepare("debian-deps", root=tmp_path)
    ds = load_prepared("debian-deps", root=tmp_path)
    assert (folder / "labels.txt").is_file() and len(ds.label_names) == ds.num_labels
    assert ds.Y_trn.shape[0] > 40_000 and (ds.prop_a, ds.prop_b) == (0.55, 1.5)
