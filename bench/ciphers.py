"""CPU cost of each cipher the bastion offers, in asyncssh itself: sealing full 32 KiB packets
(encryption and its tag; opening them costs the same work), per core, by process CPU time (so
other load on the machine does not count).

bench/jump.py --ciphers / --upstream-ciphers gives the end-to-end ratios against OpenSSH's jump
host; this one says why they differ. The bastion is the client on the hop to targets, so its
order (config.UPSTREAM_CIPHERS) decides there; on users' hops the client's order does.
"""

from __future__ import annotations

import argparse
import os
import time

from asyncssh.encryption import get_encryption, get_encryption_params
from asyncssh.mac import get_mac_params

from bastion.config import DEFAULT_CIPHERS, DEFAULT_MACS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200, help="megabytes through each cipher")
    args = parser.parse_args()
    payload = os.urandom(32768)
    packets = args.mb * 1_000_000 // len(payload)
    mac = DEFAULT_MACS[0].encode()
    print(f"MB/s per core, {packets} packets of 32 KiB (MAC {mac.decode()} where the cipher needs one):")
    for name in DEFAULT_CIPHERS:
        alg = name.encode()
        key_size, iv_size, _, _, _, _ = get_encryption_params(alg, mac)
        mac_key_size, _, _ = get_mac_params(mac)
        key, iv, mac_key = os.urandom(key_size), os.urandom(iv_size), os.urandom(mac_key_size)
        sender = get_encryption(alg, key, iv, mac, mac_key, True)
        header = len(payload).to_bytes(4, "big")
        start = time.process_time()
        for seq in range(packets):
            sender.encrypt_packet(seq, header, payload)
        seconds = time.process_time() - start
        print(f"  {name:32s} {packets * len(payload) / 1e6 / seconds:7.0f}")

if __name__ == "__main__":
    main()
