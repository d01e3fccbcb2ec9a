"""A storage client process for the crash test (test_contract.py): it appends batches of random
size to one feed as fast as the store takes them and prints ``acked <batch> <size> <last seq>``
after each append returns. The test SIGKILLs it mid-stream.

    python -m tests.relay.storage.appender FEED sqlite DIRECTORY
    python -m tests.relay.storage.appender FEED redis URL PREFIX
"""
from __future__ import annotations

import asyncio
import random
import sys

from relay.storage.base import HeadMoved
from tests.relay.storage.chain import Chain, make_storage


async def main(feed: str, kind: str, where: str, prefix: str = "colony") -> None:
    chain = Chain(feed)
    async with make_storage(kind, where, prefix) as store:
        head = await store.head(feed)
        if head is not None:
            chain.seq, chain.head = head.seq, head.hash
        batch_no = 0
        while True:
            batch_no += 1
            size = random.randint(1, 8)
            batch = chain.next(size, batch=batch_no, size=size)
            try:
                await store.append(feed, chain.seq, batch)
            except HeadMoved:  # nobody else writes this feed: a refusal here is a broken store
                print("head-moved", flush=True)
                raise
            chain.seq, chain.head = batch[-1][0].seq, batch[-1][0].hash
            print(f"acked {batch_no} {size} {chain.seq}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
