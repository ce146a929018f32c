"""Mender Update Module for the ``edged-model`` payload type.

Mender calls the module as ``edged-model STATE FILES_DIR`` (Update Module protocol v3). The
artifact's payload is the model file (``files/``) plus ``header/meta-data`` JSON:
``{"name": "ppocr-det", "sha256": "<hex>", "tier": "swap", "tasks": ["ocr.detect"],
"warmup": ["x=1x3x64x64"], "allow_signature_change": false}``. An artifact may carry
variants of the version too: ``"file": "det.onnx"`` names the model file among the payload's
files, and ``"variants": {"int8": {"file": "det-int8.onnx", "sha256": "<hex>"}}`` the others.

ArtifactInstall runs ``edged-ota install`` (verify, test-load, signature check, atomic switch,
health probe; it rolls back by itself on failure) and remembers what it did in ``tmp/``;
ArtifactRollback undoes a committed switch; ArtifactCommit keeps it (the previous version stays
in the storage tier for a later manual rollback). Target and token come from the environment
(``EDGED_TARGET``, ``EDGED_TOKEN_FILE``), as Mender passes its own environment through.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from edged.cli import ota
from edged.hashing import sha256_file

STATE_FILE = "edged-state.json"


def _meta(files_dir: Path) -> dict[str, object]:
    path = files_dir / "header" / "meta-data"
    try:
        meta = json.loads(path.read_text() or "{}")
    except (OSError, ValueError) as exc:
        raise SystemExit(f"edged-model: cannot read {path}: {exc}") from None
    if not isinstance(meta, dict) or not meta.get("name"):
        raise SystemExit("edged-model: meta-data needs at least {\"name\": ...}")
    return meta


def _payload(files_dir: Path) -> Path:
    files = sorted(p for p in (files_dir / "files").glob("*") if p.is_file())
    if not files:
        raise SystemExit("edged-model: the artifact carries no model file")
    return files[0]



def _common() -> list[str]:
    args = ["--json"]
    if os.environ.get("EDGED_TARGET"):
        args += ["--target", os.environ["EDGED_TARGET"]]
    if os.environ.get("EDGED_TOKEN_FILE"):
        args += ["--token-file", os.environ["EDGED_TOKEN_FILE"]]
    return args


def install(files_dir: Path) -> int:
    meta = _meta(files_dir)
    model = files_dir / "files" / str(meta["file"]) if meta.get("file") else _payload(files_dir)
    argv = [*_common(), "install", str(meta["name"]), str(model),
            "--sha256", str(meta.get("sha256") or sha256_file(model))]
    if meta.get("tier"):
        argv += ["--tier", str(meta["tier"])]
    for task in meta.get("tasks") or []:  # type: ignore[attr-defined]
        argv += ["--task", str(task)]
    for w in meta.get("warmup") or []:  # type: ignore[attr-defined]
        argv += ["--warmup", str(w)]
    if meta.get("allow_signature_change"):
        argv.append("--allow-signature-change")
    variants = meta.get("variants") or {}
    if not isinstance(variants, dict):
        raise SystemExit("edged-model: meta-data variants must map names to {file, sha256}")
    for name, v in variants.items():
        path = files_dir / "files" / str(v.get("file", ""))
        argv += ["--variant-file", f"{name}={path}:{v.get('sha256') or sha256_file(path)}"]
    code, result = _run(argv)
    if code == ota.COMMITTED:
        state = {"name": meta["name"], "version": result.get("version", 0),
                 "previous_version": result.get("previous_version", 0)}
        (files_dir / "tmp").mkdir(exist_ok=True)
        (files_dir / "tmp" / STATE_FILE).write_text(json.dumps(state))
    return code


def rollback(files_dir: Path) -> int:
    path = files_dir / "tmp" / STATE_FILE
    if not path.exists():
        return 0  # nothing was switched (edged-ota already rolled back a failed install)
    state = json.loads(path.read_text())
    code, _ = _run([*_common(), "rollback", str(state["name"]), "--version",
                    str(state["version"]), "--previous", str(state["previous_version"])])
    if code == 0:
        path.unlink()
    return code


def _run(argv: list[str]) -> tuple[int, dict[str, object]]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = ota.main(argv)
    text = buf.getvalue()
    sys.stderr.write(text)
    try:
        return code, json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return code, {}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: edged-model STATE [FILES_DIR]", file=sys.stderr)
        return 2
    state = args[0]
    files_dir = Path(args[1]) if len(args) > 1 else Path(".")
    if state == "SupportsRollback":
        print("Yes")
        return 0
    if state == "NeedsArtifactReboot":
        print("No")
        return 0
    if state == "ArtifactInstall":
        return install(files_dir)
    if state == "ArtifactRollback":
        return rollback(files_dir)
    if state == "Cleanup":
        (files_dir / "tmp" / STATE_FILE).unlink(missing_ok=True)
        return 0
    return 0  # Download (Mender stores the payload in files/), Commit, Failure, reboots: no-op


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
