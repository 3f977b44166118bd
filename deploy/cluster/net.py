"""The simulated hosts' network: one Linux network namespace per host (and one for the venue),
each joined by a veth pair to a bridge in the root namespace that holds the subnet's .1.

Names (at most 15 characters, Linux's limit for an interface): namespaces `<name>-h1`...
`<name>-venue`, the bridge `<name>-br`, a host's end of its veth on the bridge `<name>-h1`
(inside its namespace it is `eth0`). Everything here is idempotent: `create` on a network that
exists completes it, `destroy` on one that is gone does nothing.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
from pathlib import Path

import msgspec

from baton.errors import StackError

HOSTS = ("h1", "h2", "h3")
VENUE = "venue"
NODES = (VENUE, *HOSTS)
# The last octet (or host number) of each node in the cluster's subnet; the bridge is .1.
HOST_NUMBER = {VENUE: 10, "h1": 11, "h2": 12, "h3": 13}
# Short node names in interface names, so that a cluster name of up to 10 characters fits.
_SHORT = {VENUE: "v", "h1": "h1", "h2": "h2", "h3": "h3"}
IFNAME_MAX = 15
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,9}")


class Network(msgspec.Struct, frozen=True):
    name: str
    net: str  # e.g. 10.77.0.0/24

    @property
    def bridge(self) -> str:
        return f"{self.name}-br"

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.net).prefixlen

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.net).network_address + 1)

    def addr(self, node: str) -> str:
        return str(ipaddress.ip_network(self.net).network_address + HOST_NUMBER[node])

    def netns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def link(self, node: str) -> str:
        """The node's veth end on the bridge (root namespace): what a cut takes down."""
        return f"{self.name}-{_SHORT[node]}"

    def _peer(self, node: str) -> str:
        return f"{self.name}-{_SHORT[node]}i"


def network(name: str, net: str) -> Network:
    """A checked Network: the name short enough for every interface name, the net an IPv4
    subnet with room for .13."""
    if not NAME_RE.fullmatch(name):
        raise StackError(
            f"BATON_CLUSTER_NAME={name!r}: 1-10 lower-case letters and digits, starting with a letter "
            f"(interface names are at most {IFNAME_MAX} characters)"
        )
    try:
        n = ipaddress.ip_network(net, strict=True)
    except ValueError as e:
        raise StackError(f"BATON_CLUSTER_NET={net!r}: {e}") from None
    if n.version != 4 or n.num_addresses < 16:
        raise StackError(
            f"BATON_CLUSTER_NET={net!r}: an IPv4 subnet of at least 16 addresses, e.g. 10.77.0.0/24"
        )
    return Network(name, str(n))


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise StackError(f"ip {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out


# Where `ip netns` keeps its named namespaces, and the kernel lists this namespace's links:
# read directly, a status or an existence check runs no `ip` (the tools poll them).
NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")


def namespaces() -> set[str]:
    try:
        return {p.name for p in NETNS_DIR.iterdir()}
    except OSError:  # no namespace was ever named on this machine
        return set()


def link_exists(ifname: str) -> bool:
    return (SYS_NET / ifname).exists()


def create(n: Network) -> None:
    """Bridge, namespaces, veth pairs and addresses; what exists already is kept."""
    if not link_exists(n.bridge):
        ip("link", "add", n.bridge, "type", "bridge")
        ip("addr", "add", f"{n.gateway}/{n.prefixlen}", "dev", n.bridge)
    ip("link", "set", n.bridge, "up")
    have = namespaces()
    for node in NODES:
        ns = n.netns(node)
        if ns not in have:
            ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        if ip("-n", ns, "link", "show", "dev", "eth0", check=False).returncode != 0:
            ip("link", "del", n.link(node), check=False)  # half a pair of an interrupted create
            ip("link", "add", n.link(node), "type", "veth", "peer", "name", n._peer(node))
            ip("link", "set", n._peer(node), "netns", ns)
            ip("-n", ns, "link", "set", n._peer(node), "name", "eth0")
            ip("-n", ns, "addr", "add", f"{n.addr(node)}/{n.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("link", "set", n.link(node), "master", n.bridge, "up")


def pids(n: Network, node: str) -> list[int]:
    """Every process inside the node's namespace."""
    if n.netns(node) not in namespaces():
        return []
    out = ip("netns", "pids", n.netns(node), check=False).stdout
    return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid() and not zombie(int(p))]


def _command(pid: int) -> str:
    """The program's file name then its arguments (`redis-server /.../redis.conf`)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return ""
    # supervisord runs as `python .../supervisord -c ...`: the script names it.
    names = [Path(w).name for w in words[:2]]
    return " ".join(names[1:] if names[0].startswith("python") else names)


def zombie(pid: int) -> bool:
    """A process that has exited but was not reaped (this container's PID 1 reaps nothing):
    it holds no resource, and no signal reaches it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def kill_all(n: Network, node: str, spare: tuple[str, ...] = (), sig: int = signal.SIGKILL) -> list[int]:
    """Send `sig` (SIGKILL) to every process in the node's namespace (but those whose command
    line starts with a name in `spare`); the pids signalled."""
    done = []
    for pid in pids(n, node):
        if spare and _command(pid).startswith(spare):
            continue
        try:
            os.kill(pid, sig)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done


def set_link(n: Network, node: str, up: bool) -> None:
    """Take the node's link on the bridge down (cut off from every other node) or up."""
    ip("link", "set", n.link(node), "up" if up else "down")


def destroy(n: Network) -> None:
    """Kill what still runs in the namespaces, then remove them, the veths and the bridge."""
    have = namespaces()
    for node in NODES:
        if n.netns(node) in have:
            kill_all(n, node)
            ip("netns", "del", n.netns(node), check=False)
        # Deleting a namespace deletes its veth end and with it the pair; a pair whose
        # namespace was never made is deleted here.
        if link_exists(n.link(node)):
            ip("link", "del", n.link(node), check=False)
    if link_exists(n.bridge):
        ip("link", "del", n.bridge, check=False)


def leftovers(n: Network) -> list[str]:
    """What of this network exists (namespaces, links): empty after `destroy`."""
    have = namespaces()
    out = [ns for ns in (n.netns(node) for node in NODES) if ns in have]
    out += [i for i in (n.bridge, *(n.link(node) for node in NODES)) if link_exists(i)]
    return out


def link_up(ifname: str) -> bool:
    try:
        return "UP" in Path(f"/sys/class/net/{ifname}/operstate").read_text().upper()
    except OSError:
        return False


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not zombie(pid)
