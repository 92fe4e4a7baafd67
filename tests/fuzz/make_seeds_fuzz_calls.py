#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_calls.c into tests/fuzz/corpus/fuzz_calls/.

Each seed is a short program in the harness's operation format (see fuzz_calls.c): two
configuration bytes, then [opcode][argument bytes]... A socket byte is side << 7 | slot;
slots fill in order on each side (A = 0, B = 1). The seeds set up connections and move
data, so the fuzzer starts from inputs that already reach ESTABLISHED and beyond.
"""
import os
import struct
import sys

SOCKET, BIND, LISTEN, CONNECT, ACCEPT, SEND, RECV, ZC, SHUT, CLOSE, ABORT, SETOPT, GET, \
    RUN, STEPS, FAULT, INJECT = 0, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19
A, B = 0x00, 0x80
MS100, MS1, S67 = 0x98, 0x67, 0xFF  # run lengths: ~100 ms, ~1 ms... , ~67 s


def sock(side, slot):
    return side | slot


def op(code, *args):
    return bytes([code, *args])


def send(s, n, flags=0):
    return op(SEND, s) + struct.pack("<H", n) + bytes([flags])


def recv(s, n, flags=0):
    return op(RECV, s) + struct.pack("<H", n) + bytes([flags])


def serve_and_connect(cfg=(0, 0)):
    """B listens on port 80 (slot 0), A connects (slot 0), B accepts (slot 1)."""
    return (bytes(cfg) + op(SOCKET, 1) + op(BIND, sock(B, 0), 0x00) + op(LISTEN, sock(B, 0), 24)
            + op(SOCKET, 0) + op(CONNECT, sock(A, 0), 0x00) + op(RUN, MS100)
            + op(ACCEPT, sock(B, 0)))


SEEDS = {
    "transfer": serve_and_connect() + send(sock(A, 0), 3000) + op(RUN, MS100)
    + recv(sock(B, 1), 5000) + send(sock(B, 1), 9000) + op(RUN, MS100) + recv(sock(A, 0), 19000)
    + op(CLOSE, sock(A, 0)) + op(RUN, MS100) + recv(sock(B, 1), 10) + op(CLOSE, sock(B, 1))
    + op(RUN, S67),
    "lossy": serve_and_connect((0x0c, 0x13)) + op(FAULT, 0x42) + op(FAULT, 0x27)
    + send(sock(A, 0), 16000) + op(RUN, MS100) + recv(sock(B, 1), 9000, 1) + op(ZC, sock(B, 1), 0x00, 0x10)
    + op(RUN, 0xc0) + recv(sock(B, 1), 19000) + op(SHUT, sock(A, 0), 1) + op(RUN, 0xe0),
    "replay": serve_and_connect((0x40, 0x51)) + send(sock(A, 0), 2000) + op(RUN, MS1)
    + op(INJECT, 0x00, 0, 0) + op(INJECT, 0x83, 40, 7) + op(RUN, MS100) + recv(sock(B, 1), 4000)
    + op(ABORT, sock(B, 1)) + op(RUN, MS100) + send(sock(A, 0), 10) + op(GET, sock(A, 0), 0),
    "opts": bytes([0xa2, 0x25]) + op(SOCKET, 1) + op(SETOPT, sock(B, 0), 0, 1, 0)
    + op(SETOPT, sock(B, 0), 12, 5, 0) + op(BIND, sock(B, 0), 0x00) + op(LISTEN, sock(B, 0), 9)
    + op(SOCKET, 0) + op(SETOPT, sock(A, 0), 1, 1, 0) + op(SETOPT, sock(A, 0), 7, 1, 0)
    + op(SETOPT, sock(A, 0), 10, 200, 0) + op(CONNECT, sock(A, 0), 0x00) + op(RUN, MS100)
    + op(ACCEPT, sock(B, 0)) + send(sock(A, 0), 700, 1) + op(RUN, 0xd0) + recv(sock(B, 1), 800)
    + op(FAULT, 0x0d) + op(RUN, 0xf0) + op(GET, sock(A, 0), 3) + op(RUN, S67) + op(RUN, S67),
    "many": bytes([0x80, 0x80]) + op(SOCKET, 1) + op(BIND, sock(B, 0), 0x00) + op(LISTEN, sock(B, 0), 10)
    + b"".join(op(SOCKET, 0) + op(CONNECT, sock(A, i), 0x00) for i in range(6))
    + op(RUN, MS100) + b"".join(op(ACCEPT, sock(B, 0)) for _ in range(6))
    + b"".join(send(sock(A, i), 100 * i + 1) for i in range(6)) + op(RUN, MS100)
    + b"".join(op(CLOSE, sock(B, i)) for i in range(1, 7)) + b"".join(op(CLOSE, sock(A, i)) for i in range(6)) + op(RUN, S67)
    + b"".join(op(SOCKET, 0) + op(CONNECT, sock(A, i), 0x00) for i in range(6)) + op(RUN, MS100),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_calls")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
