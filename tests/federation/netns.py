"""A private network on this machine for network-fault tests: a Linux bridge holding the
aggregator's address, and one network namespace per silo joined to it by a veth pair.

Cutting a silo's link (`ip link set <host end> down`) is a real outage for that silo only:
its packets go nowhere, its calls hang until their timeout, the others are unaffected.
Everything lives on a random 10.x.y.0/24 not routed on this host, names carry a random tag,
and `close` removes every namespace and link whatever state the test left them in.
Needs root (CAP_NET_ADMIN) and iproute2; `unavailable_reason` says why not, by trying.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable_reason() -> str | None:
    """None when network namespaces and veth pairs can be created here, else why not
    (found by creating and deleting one of each, not by guessing from the uid)."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    tag = secrets.token_hex(3)
    namespace, host_end, peer_end = f"hfprobe-{tag}", f"hfp{tag}a", f"hfp{tag}b"
    try:
        created = _ip("netns", "add", namespace, check=False)
        if created.returncode != 0:
            return f"cannot create a network namespace: {created.stderr.strip() or created.returncode}"
        linked = _ip("link", "add", host_end, "type", "veth", "peer", "name", peer_end, "netns", namespace, check=False)
        if linked.returncode != 0:
            return f"cannot create a veth pair into a namespace: {linked.stderr.strip() or linked.returncode}"
        bridge = _ip("link", "add", f"hfp{tag}c", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"cannot create a bridge: {bridge.stderr.strip() or bridge.returncode}"
        return None
    finally:
        _ip("link", "del", f"hfp{tag}c", check=False)
        _ip("link", "del", host_end, check=False)
        _ip("netns", "del", namespace, check=False)


def _unused_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that overlaps no route or address on this host."""
    taken = []
    for line in (_ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "-o", "addr").stdout).splitlines():
        for word in line.split():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    for _ in range(100):
        candidate = ipaddress.ip_network(f"10.{secrets.randbelow(190) + 60}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(net) for net in taken if net.prefixlen > 0):
            return candidate
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


@dataclass
class SiloLink:
    namespace: str
    host_end: str
    address: str


@dataclass
class FaultNetwork:
    """The bridge (`host_address` is the aggregator's) and each silo's namespace and link."""

    tag: str
    bridge: str
    host_address: str
    links: dict[str, SiloLink] = field(default_factory=dict)

    @classmethod
    def create(cls, silo_ids: list[str]) -> "FaultNetwork":
        tag = secrets.token_hex(3)
        subnet = _unused_subnet()
        hosts = list(subnet.hosts())
        network = cls(tag, f"hfb{tag}", str(hosts[0]))
        try:
            _ip("link", "add", network.bridge, "type", "bridge")
            _ip("addr", "add", f"{network.host_address}/{subnet.prefixlen}", "dev", network.bridge)
            _ip("link", "set", network.bridge, "up")
            for index, silo_id in enumerate(silo_ids):
                link = SiloLink(f"hf-{tag}-{silo_id}", f"hfh{tag}{index}", str(hosts[index + 1]))
                peer = f"hfn{tag}{index}"
                _ip("netns", "add", link.namespace)
                network.links[silo_id] = link
                _ip("link", "add", link.host_end, "type", "veth", "peer", "name", peer, "netns", link.namespace)
                _ip("link", "set", link.host_end, "master", network.bridge)
                _ip("link", "set", link.host_end, "up")
                _ip("-n", link.namespace, "addr", "add", f"{link.address}/{subnet.prefixlen}", "dev", peer)
                _ip("-n", link.namespace, "link", "set", peer, "up")
                _ip("-n", link.namespace, "link", "set", "lo", "up")
        except BaseException:
            network.close()
            raise
        return network

    def namespace(self, silo_id: str) -> str:
        return self.links[silo_id].namespace

    def cut(self, silo_id: str) -> None:
        """The silo's cable is pulled: nothing it sends arrives, nothing reaches it."""
        _ip("link", "set", self.links[silo_id].host_end, "down")

    def restore(self, silo_id: str) -> None:
        _ip("link", "set", self.links[silo_id].host_end, "up")

    def close(self) -> None:
        """Deletes every namespace and link of this network (deleting a namespace also
        removes the veth pair inside it); safe to call twice and after a partial create."""
        for link in self.links.values():
            _ip("link", "del", link.host_end, check=False)
            _ip("netns", "del", link.namespace, check=False)
        _ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """Namespaces or links of this network still present (should be none after close)."""
        names = _ip("netns", "list").stdout + _ip("-o", "link").stdout
        return [word for word in names.split() if self.tag in word]
