"""Deterministic randomness: 64-bit mixing, API-looking ids and uniform draws from seeds.

Everything a scenario shows is derived from ``(seed, batch, index)`` through these functions,
so the same arguments always give the same ids, tokens and outcomes (Python's ``hash()`` and
``random`` are never used for what must be stable across processes).
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct

M64 = (1 << 64) - 1
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def mix(x: int) -> int:
    """Return the splitmix64 finaliser of ``x`` (a good 64-bit hash of an integer)."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def str_key(text: str) -> int:
    """Return a stable 64-bit key for ``text`` (Python's hash() is salted per process)."""
    key = 0
    for byte in text.encode():
        key = mix(key ^ byte)
    return key


def b62(value: int, length: int) -> str:
    """Return ``length`` (at most 32) id characters derived from ``value``.

    base64 of hashed bits with ``+`` and ``/`` mapped to letters: looks like the API's
    base62-ish ids and costs about a microsecond (it runs once per results line).
    """
    a = mix(value & M64)
    b = mix(a)
    raw = base64.b64encode(struct.pack("<QQQ", a, b, mix(b) if length > 21 else 0))
    return raw[:length].translate(_ID_TRANSLATE).decode()


_ID_TRANSLATE = bytes.maketrans(b"+/", b"Qz")


def sim_id(prefix: str, key: int, length: int = 24) -> str:
    """Return an id such as ``msgbatch_01...`` derived from ``key``."""
    return f"{prefix}{b62(key, length)}"


_DRAWS = 14  # uniforms per request; each use below has a fixed position (stable results)
_U16 = 1.0 / 65536.0
_UNPACK_DRAWS = struct.Struct(f"<{_DRAWS}H").unpack


def uniforms(seed: int) -> list[float]:
    """Return 14 uniform floats in [0, 1) derived from a 64-bit seed.

    16-bit resolution is plenty for rolls and log-uniform token sizes, and one blake2b call
    is much cheaper than big-int arithmetic per draw (this runs once per results line).
    """
    digest = hashlib.blake2b((seed & M64).to_bytes(8, "little"), digest_size=2 * _DRAWS).digest()
    return [x * _U16 for x in _UNPACK_DRAWS(digest)]


def affine(n: int, key: int) -> tuple[int, int, int]:
    """Return ``(a, b, a_inverse)`` of a bijection ``i -> (a*i + b) mod n``."""
    if n <= 1:
        return 1, 0, 1
    a = int(n * 0.6180339887) + (key % 7) * 2
    # Coprime (a bijection), and not +-1 (which would keep neighbours together), where such an
    # `a` exists: modulo 6 (as modulo 3 and 4) the only units are +-1.
    while math.gcd(a, n) != 1 or (n > 4 and n != 6 and a % n in (1, n - 1)):
        a += 1
    return a, key % n, pow(a, -1, n)
