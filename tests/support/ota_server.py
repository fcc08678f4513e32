"""A download repository on a loopback HTTP server, with faults to inject, and bundles to publish into it.

``RepositoryServer`` serves a directory the way a static host or CDN does (200, or 206
for ``Range: bytes=n-``) and can misbehave on purpose, per path: drop the connection
after some bytes, ignore Range, serve other bytes, send bytes without end, announce a
false Content-Length, trickle the answer a byte at a time (a slow-loris, in the headers
or in the body), or redirect elsewhere. It records every request so tests can see what
the client asked. It listens on 127.0.0.1 only, and every misbehaviour is bounded in
bytes and time, so a client that never hangs up cannot keep a test running.

``make_bundle`` writes a bundle directory as the package step leaves it (a manifest and
model files, encrypted when asked), which ``modelmake.repository.publish.publish`` reads.
"""
from __future__ import annotations

import hashlib
import json
import re
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from modelmake.bundle import keys
from modelmake.bundle.streaming_aead import associated_data_for, encrypt_file

BUNDLE = "acme"
DATA_KEY = bytes(range(32))
SIGNING_KEY = keys.generate_signing_key()
GENERIC = "android-arm64-cpu"
TARGETS: dict[str, dict] = {GENERIC: {"platform": "android", "chipsets": [], "min_os_version": None}}
ENDLESS_CAP = 64 << 20  # an "endless" body stops here, in case a client never hangs up
TRICKLE_CAP = 10.0  # seconds: a trickle stops here, in case a client never hangs up


# --- models ------------------------------------------------------------------------------

WEIGHTS = {"1.0.0": 1.0, "2.0.0": 2.0}  # every weight of the Dense layer; the bias is 0


def expected_output(version: str) -> list[float]:
    """What the model of ``version`` gives for an input of eight ones."""
    return [8 * WEIGHTS[version]] * 2


@cache
def tflite_models() -> dict[str, bytes]:
    """A tiny real TFLite model (Dense, 8 inputs -> 2 outputs) per version, built once per session."""
    import numpy as np
    import tensorflow as tf

    models = {}
    for version, weight in WEIGHTS.items():
        model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(2)])
        model.layers[0].set_weights([np.full((8, 2), weight, np.float32), np.zeros(2, np.float32)])
        models[version] = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return models


def run_model(path: Path) -> list[float]:
    """Load the model file with LiteRT and run it on eight ones."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ones((1, 8), np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1).tolist()


# --- bundles -----------------------------------------------------------------------------

@dataclass(frozen=True)
class VariantFile:
    target: str
    name: str  # the variant's name in the spec: fp32, int8 ...
    format: str
    content: bytes
    platform: str = "android"

    @property
    def id(self) -> str:
        return f"digits.{self.name}.{self.format}@{self.target}"


def make_bundle(root: Path, version: str, files: list[VariantFile], *, encrypt: bool) -> Path:
    """A bundle directory for model "digits" of ``version``, as publish() reads it."""
    bundle = root / f"bundle-{version}-{'enc' if encrypt else 'clear'}"
    variants = {}
    for f in files:
        path = f"files/{f.target}/digits.{f.name}.{f.format}" + (".enc" if encrypt else "")
        destination = bundle / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        entry: dict[str, object] = {"target": f.target, "platform": f.platform, "format": f.format, "precision": f.name, "file": path}
        if encrypt:
            plain = bundle / "plain.tmp"
            plain.write_bytes(f.content)
            measured = encrypt_file(plain, destination, DATA_KEY, associated_data_for(BUNDLE, version, path))
            plain.unlink()
            entry["encryption"] = {
                "scheme": "AES256_GCM_HKDF_1MB", "associated_data": {"bundle": BUNDLE, "version": version, "path": path},
                "plaintext_sha256": measured.plaintext_sha256, "plaintext_size": measured.plaintext_size,
            }
        else:
            destination.write_bytes(f.content)
        data = destination.read_bytes()
        variants[f.id] = {**entry, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = {
        "format_version": 1, "bundle": BUNDLE, "version": version, "signing": "release",
        "targets": {f.target: {"platform": f.platform, "soc": f.target, "min_os": ""} for f in files},
        "models": {"digits": {"variants": variants}},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    archive = root / f"{BUNDLE}-{version}-{'enc' if encrypt else 'clear'}.zip"
    archive.write_bytes(b"the bundle archive of " + version.encode())
    return bundle


# --- the server --------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    path: str
    range: str | None  # the Range header the client sent
    status: int


@dataclass
class _Faults:
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # path -> [bytes to send, times left]
    ignore_range: set[str] = field(default_factory=set)
    content: dict[str, bytes] = field(default_factory=dict)
    endless: set[str] = field(default_factory=set)
    content_length: dict[str, int] = field(default_factory=dict)
    trickle: dict[str, tuple[float, bool]] = field(default_factory=dict)  # path -> (seconds per byte, from the status line)
    redirect: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (status, Location)


class RepositoryServer:
    """``with RepositoryServer(directory) as server:`` serves ``directory`` at ``server.url``.

    With ``tls=True`` it serves https:// with a certificate for 127.0.0.1 that only
    ``server.client_context`` (an ``ssl.SSLContext`` for the client) trusts.
    """

    def __init__(self, root: Path, *, tls: bool = False):
        self.root = Path(root)
        self.requests: list[Request] = []
        self.faults = _Faults()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.client_context: ssl.SSLContext | None = None
        if tls:
            certificate, key = _loopback_certificate()
            with tempfile.TemporaryDirectory() as folder:  # ssl loads a chain from files only
                (Path(folder) / "cert.pem").write_bytes(certificate)
                (Path(folder) / "key.pem").write_bytes(key)
                server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                server_context.load_cert_chain(Path(folder) / "cert.pem", Path(folder) / "key.pem")
            self._httpd.socket = server_context.wrap_socket(self._httpd.socket, server_side=True)
            self.client_context = ssl.create_default_context(cadata=certificate.decode("ascii"))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> RepositoryServer:
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name="ota-server", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # Faults, each for one path relative to the repository.
    def drop_after(self, path: str, count: int, *, times: int = 1) -> None:
        """Close the connection after ``count`` bytes of the body, for the next ``times`` requests."""
        self.faults.drop_after[path] = [count, times]

    def ignore_range(self, path: str) -> None:
        self.faults.ignore_range.add(path)

    def serve(self, path: str, content: bytes) -> None:
        self.faults.content[path] = content

    def endless(self, path: str) -> None:
        """Send the file, then more bytes without end (and no Content-Length)."""
        self.faults.endless.add(path)

    def announce_length(self, path: str, length: int) -> None:
        self.faults.content_length[path] = length

    def trickle(self, path: str, interval: float, *, headers: bool = False) -> None:
        """Send the answer one byte every ``interval`` seconds: the body only, or (``headers``) from the status line on."""
        self.faults.trickle[path] = (interval, headers)

    def redirect(self, path: str, location: str, *, status: int = 302) -> None:
        """Answer ``path`` with a redirect to ``location`` (any URL: another path, scheme or host)."""
        self.faults.redirect[path] = (status, location)

    def clear(self) -> None:
        self.faults = _Faults()

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


@cache
def _loopback_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for 127.0.0.1 and its key, both PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _handler(server: RepositoryServer):
    class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: one request per connection, as simple as it gets
        def do_GET(self) -> None:
            path = urlsplit(self.path).path.lstrip("/")
            faults = server.faults
            if path in faults.redirect:
                status, location = faults.redirect[path]
                return self._answer(path, status, {"Location": location, "Content-Length": "0"}, b"")
            file = (server.root / path).resolve()
            if path in faults.content:
                content = faults.content[path]
            elif file.is_file() and file.is_relative_to(server.root.resolve()):
                content = file.read_bytes()
            else:
                return self._answer(path, 404, {}, b"")
            start, status, headers = 0, 200, {}
            wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if wanted and path not in faults.ignore_range:
                start = int(wanted[1])
                if start >= len(content):
                    return self._answer(path, 416, {"Content-Range": f"bytes */{len(content)}"}, b"")
                status, headers["Content-Range"] = 206, f"bytes {start}-{len(content) - 1}/{len(content)}"
            body = content[start:]
            if path not in faults.endless:
                headers["Content-Length"] = str(faults.content_length.get(path, len(body)))
            with server._lock:
                drop = faults.drop_after.get(path)
                if drop and drop[1] > 0:
                    drop[1] -= 1
                    body = body[: drop[0]]  # the Content-Length above still promises the whole body
            self._answer(path, status, headers, body)
            if path in faults.endless:
                self._send_forever()

        def _answer(self, path: str, status: int, headers: dict[str, str], body: bytes) -> None:
            server.requests.append(Request(path, self.headers.get("Range"), status))
            if path in server.faults.trickle:
                return self._trickle(status, headers, body, *server.faults.trickle[path])
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a client that refused the headers (an oversized Content-Length) hangs up early

        def _trickle(self, status: int, headers: dict[str, str], body: bytes, interval: float, from_status_line: bool) -> None:
            head = "".join([f"HTTP/1.0 {status} {self.responses[status][0]}\r\n",
                            *(f"{name}: {value}\r\n" for name, value in headers.items()), "\r\n"]).encode("latin-1")
            if not from_status_line:
                self.wfile.write(head)
                head = b""
            ends = time.monotonic() + TRICKLE_CAP
            try:
                for byte in head + body:
                    if time.monotonic() > ends:
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(interval)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

        def _send_forever(self) -> None:
            try:
                for _ in range(ENDLESS_CAP >> 16):
                    self.wfile.write(b"\0" * (1 << 16))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up, as it should

        def log_message(self, *args) -> None:
            pass

    return Handler
