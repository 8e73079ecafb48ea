"""The resolver and the NAT of transparent TCP (jupyter_exec.core.transparent_tcp) on
hand-made packets: what they answer, rewrite, and drop. The whole path, with a real
namespace and TUN, is in tests/rpc/test_transparent_tcp.py."""

from __future__ import annotations

import socket
import struct

from jupyter_exec.core.transparent_tcp import FAKE_PEER, LOCAL, Nat, Resolver, _checksum


def query(name: str, kind: int = 1, ident: int = 0x1234, questions: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return (
        struct.pack("!HHHHHH", ident, 0x0100, questions, 0, 0, 0)
        + labels
        + struct.pack("!HH", kind, 1)
    )


def test_names_get_synthetic_addresses_in_order() -> None:
    resolver = Resolver()
    first = resolver.answer(query("Example.COM"))
    assert first is not None and first[:2] == b"\x12\x34"  # the query's id
    assert struct.unpack_from("!HHHH", first, 2) == (0x8180, 1, 1, 0)
    assert first.endswith(socket.inet_aton("198.18.0.1"))
    second = resolver.answer(query("other.test"))
    assert second is not None and second.endswith(socket.inet_aton("198.18.0.2"))
    again = resolver.answer(query("example.Com"))
    assert again is not None and again.endswith(socket.inet_aton("198.18.0.1"))
    assert resolver.names == {"198.18.0.1": "example.com", "198.18.0.2": "other.test"}


def test_a_full_pool_gives_no_address() -> None:
    resolver = Resolver()
    resolver._addresses = dict.fromkeys(map(str, range(131070)), "198.18.0.1")
    reply = resolver.answer(query("one-too-many.test"))
    assert reply is not None and struct.unpack_from("!HH", reply, 4) == (1, 0)


def test_other_questions_get_no_address() -> None:
    """AAAA and the rest: an empty answer (the NAT carries IPv4 only), nothing allocated."""
    resolver = Resolver()
    reply = resolver.answer(query("example.com", kind=28))
    assert reply is not None and struct.unpack_from("!HH", reply, 4) == (1, 0)
    assert resolver.names == {}


def test_what_is_not_a_query_gets_no_reply() -> None:
    resolver = Resolver()
    response = bytearray(query("example.com"))
    response[2] |= 0x80
    for bad in (b"", b"\0" * 11, bytes(response), query("a.test", questions=2),
                query("a.test")[:-3]):  # fmt: skip
        assert resolver.answer(bad) is None
    assert resolver.names == {}


def tcp_packet(src: str, sport: int, dst: str, dport: int, payload: bytes = b"") -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0) + payload
    return ip + tcp


def valid(packet: bytes) -> bool:
    """Both checksums hold (a sum over a header with its checksum is 0)."""
    header = (packet[0] & 0x0F) * 4
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(packet) - header)
    return _checksum(packet[:header]) == b"\0\0" == _checksum(pseudo + packet[header:])


def test_a_connection_is_turned_towards_the_listener_and_back() -> None:
    nat = Nat(relay_port=4000)
    out = nat.rewrite(tcp_packet(LOCAL, 5555, "203.0.113.9", 80, b"odd"))
    assert out is not None and valid(out)
    assert out[12:20] == socket.inet_aton(FAKE_PEER) + socket.inet_aton(LOCAL)
    peer_port, relay_port = struct.unpack_from("!HH", out, 20)
    assert relay_port == 4000 and nat.destination(peer_port) == ("203.0.113.9", 80)
    # the same connection keeps its fake peer; another gets its own
    again = nat.rewrite(tcp_packet(LOCAL, 5555, "203.0.113.9", 80))
    assert again is not None and struct.unpack_from("!H", again, 20)[0] == peer_port
    other = nat.rewrite(tcp_packet(LOCAL, 5556, "203.0.113.9", 80))
    assert other is not None and struct.unpack_from("!H", other, 20)[0] != peer_port
    back = nat.rewrite(tcp_packet(LOCAL, 4000, FAKE_PEER, peer_port, b"reply"))
    assert back is not None and valid(back)
    assert back[12:20] == socket.inet_aton("203.0.113.9") + socket.inet_aton(LOCAL)
    assert struct.unpack_from("!HH", back, 20) == (80, 5555)


def test_what_the_nat_does_not_carry_is_dropped() -> None:
    nat = Nat(relay_port=4000)
    udp = bytearray(tcp_packet(LOCAL, 5555, "203.0.113.9", 53))
    udp[9] = socket.IPPROTO_UDP
    ipv6 = bytes([0x60]) + bytes(59)
    for packet in (b"", bytes(udp), ipv6, tcp_packet("10.9.9.9", 1, "203.0.113.9", 80),
                   tcp_packet(LOCAL, 4000, FAKE_PEER, 1234)):  # fmt: skip  # unknown peer
        assert nat.rewrite(packet) is None
    assert nat.destination(1024) is None
