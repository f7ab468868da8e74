"""What the services trust, without any server (issue 16, items 5-7): destination checks,
tokens and the refusal to listen open, and reading progress files a caller named.

No test here connects anywhere: refusals are checked before any connection, and names are
resolved by a stand-in resolver (or ``localhost``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from carbonscaler.accounting.progress import CsvProgress, ProgressError, check_progress_path
from carbonscaler.security import (
    DestinationPolicy,
    DestinationRefused,
    InsecureBindError,
    TokenError,
    check_bind,
    load_token,
    parse_networks,
    push_authorized,
    push_key,
    with_push_key,
)
from carbonscaler.security.tokens import bearer_value, is_loopback

# -- item 6: destinations -------------------------------------------------------------------

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://[fd00:ec2::254]/latest/",
    "http://[fe80::1]:80/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://Metadata.Google.Internal./",
    "http://metadata/",
    "http://metadata.goog/",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba
    "http://168.63.129.16/",  # Azure WireServer
    "http://2852039166/",  # 169.254.169.254 as one decimal number
    "http://0xA9FEA9FE/",  # ... in hex
    "http://0251.0376.0251.0376/",  # ... in octal
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://169.254.43518/",  # ... with the last part filling two bytes
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::169.254.169.254]/",  # IPv4-compatible
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://0.0.0.0:8899/",  # reaches this host
    "http://0/",
    "http://[::]:80/",
    "http://224.0.0.1/",
    "ftp://127.0.0.1/",
    "http://.bad./",
]


@pytest.mark.parametrize("url", REFUSED)
def test_link_local_metadata_and_encoded_destinations_are_refused(url: str) -> None:
    with pytest.raises(DestinationRefused):
        DestinationPolicy().check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8899/",
        "http://localhost:7777/carbon?key=abc",
        "http://[::1]:8000",
        "https://10.1.2.3/x",
        "http://carbon-service.carbonscaler-system.svc:7777/",
        "http://node_1.example:8000",
    ],
)
def test_ordinary_destinations_pass(url: str) -> None:
    DestinationPolicy().check_url(url)


class FakeDNS:
    """A stand-in for DNS: names to addresses, recording the questions."""

    def __init__(self, mapping: dict[str, list[str]]) -> None:
        self.mapping = mapping
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.mapping:
            raise OSError(f"{host} does not resolve")
        return self.mapping[host]


def test_names_are_resolved_and_every_address_checked() -> None:
    dns = FakeDNS(
        {
            "evil.example": ["169.254.169.254"],
            "mixed.example": ["127.0.0.1", "169.254.169.254"],  # one bad address taints it
            "good.example": ["127.0.0.1", "::1"],
            "mapped.example": ["::ffff:169.254.169.254"],
        }
    )
    policy = DestinationPolicy(resolver=dns)

    async def main() -> None:
        for name in ("evil.example", "mixed.example", "mapped.example"):
            with pytest.raises(DestinationRefused, match=r"169\.254"):
                await policy.resolve(name, 80)
        assert await policy.resolve("good.example", 80) == ["127.0.0.1", "::1"]
        # Literals need no resolver; names that do not resolve yet pass registration.
        assert await policy.resolve("127.0.0.1", 80) == ["127.0.0.1"]
        await policy.check_url_resolved("http://unknown.example/")
        with pytest.raises(DestinationRefused):
            await policy.check_url_resolved("http://evil.example:8080/")

    asyncio.run(main())
    assert "127.0.0.1" not in dns.asked


def test_allowed_networks_restrict_further() -> None:
    dns = FakeDNS({"both.example": ["10.0.0.5", "192.168.1.5"], "far.example": ["8.8.8.8"]})
    policy = DestinationPolicy(allow=parse_networks(["10.0.0.0/8", "fd00::/8"]), resolver=dns)

    async def main() -> None:
        assert await policy.resolve("both.example", 80) == ["10.0.0.5"]  # pinned to allowed
        with pytest.raises(DestinationRefused, match="outside the networks allowed"):
            await policy.resolve("far.example", 80)
        with pytest.raises(DestinationRefused, match="outside"):
            await policy.resolve("127.0.0.1", 80)

    asyncio.run(main())
    # Allowing a metadata network does not make it reachable.
    listed = DestinationPolicy(allow=parse_networks(["169.254.0.0/16"]))
    with pytest.raises(DestinationRefused, match="link-local"):
        listed.check_url("http://169.254.169.254/")
    with pytest.raises(ValueError, match="CIDR"):
        parse_networks(["not-a-net"])


def test_localhost_resolves_to_loopback_and_passes() -> None:
    addresses = asyncio.run(DestinationPolicy().resolve("localhost", 80))
    assert addresses and all(a in ("127.0.0.1", "::1") for a in addresses)


# -- item 5: tokens -------------------------------------------------------------------------


def test_token_from_value_or_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("f00dfeed-cafe-beef\n")
    assert load_token(None, secret) == "f00dfeed-cafe-beef"
    assert load_token("  abcdefgh12 ", None) == "abcdefgh12"
    assert load_token(None, None) is None
    with pytest.raises(TokenError, match="not both"):
        load_token("abcdefgh12", secret)
    for content, reason in [("\n", "empty"), ("short", "at least 8"), ("two words!", "spaces")]:
        secret.write_text(content)
        with pytest.raises(TokenError, match=reason):
            load_token(None, secret)
    with pytest.raises(TokenError, match="cannot read"):
        load_token(None, tmp_path / "missing")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"])
def test_loopback_needs_no_token(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, None, insecure=False, service="carbon service")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.4", "myhost"])
def test_beyond_loopback_without_a_token_refuses_to_start(host: str) -> None:
    with pytest.raises(InsecureBindError) as caught:
        check_bind(host, None, insecure=False, service="carbon service")
    message = str(caught.value)
    assert "--token-file" in message and "--insecure" in message and "127.0.0.1" in message
    check_bind(host, "a-token-123", insecure=False, service="carbon service")
    check_bind(host, None, insecure=True, service="carbon service")


def test_push_keys() -> None:
    token = "operator-token-1"
    key = push_key(token)
    assert len(key) == 64 and key != token and push_key("other-token") != key
    url = with_push_key("http://op:8899/?zone=DE", token)
    assert url == f"http://op:8899/?zone=DE&key={key}"
    assert with_push_key(url, token) == url  # idempotent
    assert with_push_key("http://op:8899/", None) == "http://op:8899/"
    assert push_authorized(None, None, None)  # no token: open
    assert not push_authorized(None, None, token)
    assert not push_authorized("Bearer wrong", "wrong", token)
    assert push_authorized(f"Bearer {token}", None, token)
    assert push_authorized(None, key, token)
    assert push_authorized(f"bearer {key}", None, token)
    assert bearer_value("Basic abc") is None and bearer_value("Bearer  x ") == "x"


# -- item 7: progress files -----------------------------------------------------------------


def read_within(reader: CsvProgress, timeout_s: float = 20.0) -> float | Exception | None:
    """Read in a thread, so that a read that blocks fails the test instead of hanging it."""
    outcome: list[float | Exception | None] = []

    def run() -> None:
        try:
            outcome.append(reader.read())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert outcome, f"reading {reader.path} blocked for {timeout_s} s"
    return outcome[0]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "progress.csv"
    os.mkfifo(fifo)  # nobody writes: a blocking open would wait forever
    for reader in (CsvProgress(fifo), CsvProgress(fifo, root=tmp_path)):
        result = read_within(reader)
        assert isinstance(result, ProgressError) and "not a regular file" in str(result)
    with pytest.raises(ProgressError, match="not a regular file"):
        check_progress_path(fifo, tmp_path)


def test_dev_zero_is_refused_and_never_read(tmp_path: Path) -> None:
    result = read_within(CsvProgress("/dev/zero"))
    assert isinstance(result, ProgressError) and "not a regular file" in str(result)
    link = tmp_path / "progress.csv"
    link.symlink_to("/dev/zero")
    result = read_within(CsvProgress(link, root=tmp_path))
    assert isinstance(result, ProgressError) and "outside the progress root" in str(result)


def test_files_outside_the_root_are_refused_and_never_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nlast:line:of:the:secret\n")
    root = tmp_path / "jobs"
    root.mkdir()
    escape = root / "progress.csv"
    escape.symlink_to(secret)  # a link inside the root that leads out of it
    for path in (secret, escape, root / ".." / "secret.txt", Path("/etc/passwd")):
        with pytest.raises(ProgressError, match="outside the progress root") as caught:
            check_progress_path(path, root)
        result = read_within(CsvProgress(path, root=root))
        assert isinstance(result, ProgressError)
        for message in (str(caught.value), str(result)):
            assert "last:line" not in message and "root:x" not in message
    # Inside the root, a file that is not progress says so without quoting it.
    inside = root / "job" / "progress.csv"
    inside.parent.mkdir()
    inside.write_text("root:x:0:0:root:/root:/bin/bash\nlast:line:of:the:secret\n")
    result = read_within(CsvProgress(inside, root=root))
    assert isinstance(result, ProgressError) and "no second column" in str(result)
    assert "last:line" not in str(result)
    inside.write_text("1,10\n2,20\n")
    assert read_within(CsvProgress(inside, root=root)) == 20.0


def test_only_the_tail_of_a_large_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    with path.open("w") as fh:
        fh.write("x" * (8 << 20))  # 8 MiB without a newline, then rows
        fh.write("\n1,10\n2,42.5\n")
    assert read_within(CsvProgress(path, root=tmp_path)) == 42.5
