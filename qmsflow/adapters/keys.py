"""Ed25519 signing keys in files (``cryptography``): made, loaded, used to seal and to check seals.

A private key lives in a PEM file readable by its owner only (0600; a file others may read is refused),
outside the records store: by default ``.qms/signing-key.pem`` of the compliance repo, in production
wherever ``QMS_SIGNING_KEY_FILE`` points (a secret mounted into the web app's process only).
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..domain.errors import DomainError


class KeyFileError(DomainError):
    """A signing key file that cannot be used; the message names the file and what to do."""


def key_id(public_raw: bytes) -> str:
    return "ed25519:" + hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    path: Path
    private: Ed25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public(self) -> str:
        return base64.b64encode(self.public_raw).decode("ascii")

    @property
    def id(self) -> str:
        return key_id(self.public_raw)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode("ascii")


def generate(path: Path) -> SigningKey:
    """A new key written to ``path`` (mode 0600, its folder 0700 when created); refuses to overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists already: a signing key is never overwritten") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return SigningKey(path, private)


def load(path: Path) -> SigningKey:
    """The key in ``path``; ``KeyFileError`` when it is missing, readable by others or not an Ed25519 key."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"the signing key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the signing key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"the signing key file {path} may be read by others (mode {mode & 0o777:o}): chmod 600 it")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} holds no unencrypted PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a key that is not Ed25519")
    return SigningKey(path, private)


def check(public: str, message: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is the Ed25519 signature of ``message`` by the ``public`` key (base64)."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public, validate=True))
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
