"""Client fingerprints and addresses: JA4 strings, user agents, payment/device ids, IPv4 pools.

The JA4 values have the real shape (``t13d1516h2_<12 hex>_<12 hex>``) but are not
captures; what matters for linking is which populations share which value.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

JA4_CHROME = "t13d1516h2_8daaf6152771_02713d6af862"  # Chrome and Edge: most benign users
JA4_FIREFOX = "t13d1715h2_5b57614c22b0_3d5424432f57"
JA4_SAFARI = "t13d2014h2_a09f3c656075_14788d8d241b"
JA4_PYTHON = "t13d1812h2_e8a523a41297_ef7df7f74e48"  # httpx-based SDKs
JA4_NODE = "t13d1011h2_1d37bd780c83_2f1e2a5b7c3d"
JA4_GO = "t13d1311h2_f57a46bbacb6_ab7e3b40a677"

UA_CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
UA_CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
UA_EDGE = UA_CHROME_WIN + " Edg/131.0.0.0"
UA_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
UA_SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
UA_OPENAI_PY = "OpenAI/Python 1.54.4"
UA_ANTHROPIC_PY = "Anthropic/Python 0.39.0"
UA_OPENAI_JS = "OpenAI/JS 4.73.0"
UA_ANTHROPIC_JS = "Anthropic/JS 0.32.1"
UA_GO = "Go-http-client/2.0"


@dataclass(frozen=True)
class Client:
    """One client program: its TLS fingerprint, user agent and the API dialect it speaks
    (``None``: a browser front end that may call either)."""

    ja4: str
    user_agent: str
    dialect: str | None = None


BROWSERS: tuple[tuple[Client, float], ...] = (
    (Client(JA4_CHROME, UA_CHROME_WIN), 0.38),
    (Client(JA4_CHROME, UA_CHROME_MAC), 0.2),
    (Client(JA4_CHROME, UA_EDGE), 0.1),
    (Client(JA4_SAFARI, UA_SAFARI_IPHONE), 0.2),
    (Client(JA4_FIREFOX, UA_FIREFOX), 0.12),
)
SDKS: tuple[tuple[Client, float], ...] = (
    (Client(JA4_PYTHON, UA_OPENAI_PY, "openai"), 0.4),
    (Client(JA4_PYTHON, UA_ANTHROPIC_PY, "anthropic"), 0.25),
    (Client(JA4_NODE, UA_OPENAI_JS, "openai"), 0.15),
    (Client(JA4_NODE, UA_ANTHROPIC_JS, "anthropic"), 0.1),
    (Client(JA4_GO, UA_GO, None), 0.1),
)
PHONE = Client(JA4_SAFARI, UA_SAFARI_IPHONE)

# First octets of large, ordinary public allocations (no private, CGNAT or test ranges).
_PUBLIC_FIRST = (
    24, 31, 37, 45, 50, 62, 66, 68, 71, 73, 77, 79, 81, 82, 84, 86, 88, 90, 92, 94,
    96, 98, 108, 109, 151, 176, 178, 185, 188, 190, 193, 194, 201, 212, 213, 217,
)  # fmt: skip
# Hosting ranges, where scripted clients and proxy exits live.
_HOSTING_FIRST = (3, 13, 18, 34, 35, 44, 52, 54, 104, 137, 139, 143, 159, 167)


def pick(rng: random.Random, weighted: tuple[tuple[Client, float], ...]) -> Client:
    clients = [c for c, _ in weighted]
    return rng.choices(clients, weights=[w for _, w in weighted])[0]


def token(rng: random.Random, prefix: str, bits: int = 64) -> str:
    """An opaque hash-like id (payment or device fingerprint, org id)."""
    return f"{prefix}{rng.getrandbits(bits):0{bits // 4}x}"


def public_ip(rng: random.Random, hosting: bool = False) -> str:
    first = rng.choice(_HOSTING_FIRST if hosting else _PUBLIC_FIRST)
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def subnet_pool(
    rng: random.Random, subnets: int, addresses: int, hosting: bool = False
) -> tuple[str, ...]:
    """``addresses`` addresses spread over ``subnets`` random /24s (several per /24 when
    addresses > subnets), as a proxy provider's exit pool looks."""
    prefixes = [public_ip(rng, hosting).rsplit(".", 1)[0] for _ in range(subnets)]
    return tuple(f"{prefixes[i % subnets]}.{rng.randrange(1, 255)}" for i in range(addresses))
