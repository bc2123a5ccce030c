"""`mobilesam ui`: a local web app to segment a photo or label a folder by pointing at objects.

The server (FastAPI + uvicorn, the `ui` extra) encodes each image once, decodes prompts
with the exact float32 decoder and saves annotations after every change; the page
(static/, plain HTML and JavaScript, nothing fetched from the network) draws them.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
import time
from pathlib import Path

from ..errors import MobileSAMError, OutputError, PromptError


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (uploads)
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MobileSAMError(
            f"`mobilesam ui` needs the ui extra ({exc.name} is missing): pip install 'mobilesam[ui]'"
        ) from exc


def build_app(
    source,
    out=None,
    checkpoint=None,
    model_type=None,
    device=None,
    img_size=1024,
    cache_images=8,
    recursive=False,
    import_from=None,
    classes=None,
):
    """The app for `source` (a folder, an image or None for uploads), and its model service;
    recursive: a folder's subfolders too; import_from: a COCO file (or a folder of YOLO,
    VOC or LabelMe label files) whose masks seed the images nobody has labelled yet
    (`Workspace.import_coco`; boxes without masks are segmented by the model); classes: a
    file of class names (classes.txt, obj.names, a YOLO dataset YAML), the labels the page
    offers and the exports' category order (and the names of a YOLO folder's class
    numbers); checkpoint, model_type, device, img_size: the model (`MobileSAM`'s)."""
    _require_extra()
    from ..api import MobileSAM
    from ..convert import load_annotations
    from ..label_files import read_classes
    from .model import ModelService
    from .server import create_app
    from .workspace import Workspace

    workspace = Workspace(source, out, recursive, None if classes is None else read_classes(classes))
    # The import is read before the model loads (a bad file fails at once); YOLO's class
    # numbers are named by the `classes` file.
    coco = None if import_from is None else load_annotations(import_from, workspace.root, classes)
    sam = MobileSAM(checkpoint, model_type, device, img_size=img_size)
    service = ModelService(sam.predictor, cache_images=cache_images)
    try:
        if coco is not None:
            _import(workspace, coco, import_from, service)
    except BaseException:  # Ctrl-C during a long import: what was imported is saved
        service.close()
        raise
    return create_app(workspace, service, sam.model_type), service


def _import(workspace, coco: dict, path, service) -> None:
    """Seed the workspace from `coco` (read from `path`), boxes without masks segmented by
    `service`; says what it did."""

    def box_masks(name, image_path, boxes):
        start = time.perf_counter()
        made = service.box_masks(name, image_path, boxes)
        print(f"{name}: {len(made)} masks from boxes in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        return made

    done = workspace.import_coco(coco, box_masks)
    print(
        f"imported {len(done['imported'])} images from {path}; kept {len(done['kept'])} already labelled, "
        f"{len(done['empty'])} without annotations, {len(done['unknown'])} not in this folder, "
        f"{len(done['skipped'])} skipped",
        file=sys.stderr,
    )
    for what in ("skipped", "dropped"):
        for reason in done[what]:
            print(f"{what}: {reason}", file=sys.stderr)
    if done["unknown"] and not (done["imported"] or done["kept"] or done["empty"] or done["skipped"]):
        listed = workspace.images()
        print(
            f"none of its file names is an image of {workspace.root} (it names {done['unknown'][0]!r}"
            + (f", the folder has {listed[0].name!r}" if listed else "")
            + "): file_name must be the image's path below the folder given to `mobilesam ui`",
            file=sys.stderr,
        )


def serve(
    source: str | Path | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    out: str | Path | None = None,
    open_browser: bool = False,
    recursive: bool = False,
    import_from: str | Path | None = None,
    classes: str | Path | None = None,
    **model: object,
) -> None:
    _require_extra()
    sock = bind(host, port)  # before the model loads: a taken port fails at once
    try:
        app, service = build_app(
            source, out, recursive=recursive, import_from=import_from, classes=classes, **model
        )
    except BaseException:
        sock.close()
        raise
    import uvicorn

    port = sock.getsockname()[1]  # the one the system chose for --port 0
    url = f"http://{host}:{port}/"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(
            f"warning: serving on {host}: anyone who can reach this address can read and label these images",
            file=sys.stderr,
        )
    print(f"mobilesam ui: {url}  (API docs: {url}docs; Ctrl-C stops)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
        service.close()


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) for the server; OutputError if that fails
    (a port in use, a host that is not this machine's), PromptError for no port number."""
    if not 0 <= port <= 65535:
        raise PromptError(f"--port must be between 0 and 65535, got {port}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        hint = (
            "; another `mobilesam ui` may be running: pass --port N" if exc.errno == errno.EADDRINUSE else ""
        )
        raise OutputError(f"cannot serve on {host}:{port}: {exc.strerror or exc}{hint}") from None
