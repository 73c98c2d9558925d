#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""crawl_aiohttp: the Python peer of the crawl benchmark (bench/http_run.py),
the seeds' recipe for a scraper: asyncio + aiohttp for the I/O-bound fetching,
a ProcessPoolExecutor for the CPU-bound parsing (html.parser in the workers,
one per CPU), the event loop owning the seen-set and the frontier.

The same rules as examples/scraper.c: follow <a href> links that resolve
(fragment dropped) to the start URL's scheme, host and port; fetch each URL at
most once and at most --limit URLs in all; a status other than 200 is broken.

  /usr/bin/python3 crawl_aiohttp.py --url http://127.0.0.1:PORT/ --limit 10000 -c 64

Prints one JSON line: pages, ok, broken, offhost, elapsed_s, pages_per_s,
rss_kib (the main process's VmHWM; bench/http_run.py also samples the RSS of
the whole process tree)."""
import argparse
import asyncio
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from html.parser import HTMLParser
from urllib.parse import urljoin, urldefrag, urlsplit

import aiohttp


class LinkParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title = None
        self.in_title = False
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            for k, v in attrs:
                if k == "href" and v is not None:
                    self.hrefs.append(v.strip())
        elif tag == "title" and self.title is None:
            self.in_title = True
            self.title = ""

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False

    def handle_data(self, data):
        if self.in_title:
            self.title += data


def parse(url, body, origin):
    """Runs in a worker process: (title, on-host links, off-host count)."""
    p = LinkParser()
    p.feed(body.decode("utf-8", "replace"))
    p.close()
    links, offhost = [], 0
    for h in p.hrefs:
        u = urldefrag(urljoin(url, h))[0]
        s = urlsplit(u)
        if (s.scheme, s.netloc) == origin:
            links.append(u)
        else:
            offhost += 1
    return (p.title or "").strip(), links, offhost


def vmhwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def crawl(start, limit, c, procs):
    s = urlsplit(start)
    origin = (s.scheme, s.netloc)
    loop = asyncio.get_running_loop()
    seen = {start}
    frontier = asyncio.Queue()
    frontier.put_nowait(start)
    stats = {"pages": 0, "ok": 0, "broken": 0, "offhost": 0}
    pending = 1  # admitted but not finished

    with ProcessPoolExecutor(max_workers=procs) as pool:
        conn = aiohttp.TCPConnector(limit=c, limit_per_host=c)
        async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as session:
            done = asyncio.Event()

            async def worker():
                nonlocal pending
                while True:
                    url = await frontier.get()
                    try:
                        async with session.get(url, allow_redirects=False) as resp:
                            status = resp.status
                            body = await resp.read()
                        if status == 200:
                            title, links, off = await loop.run_in_executor(
                                pool, parse, url, body, origin)
                            stats["ok"] += 1
                            stats["offhost"] += off
                            for l in links:
                                if l not in seen and len(seen) < limit:
                                    seen.add(l)
                                    pending += 1
                                    frontier.put_nowait(l)
                        else:
                            stats["broken"] += 1
                    except aiohttp.ClientError:
                        stats["broken"] += 1
                    stats["pages"] += 1
                    pending -= 1
                    if pending == 0:
                        done.set()

            t0 = time.perf_counter()
            workers = [asyncio.create_task(worker()) for _ in range(c)]
            await done.wait()
            elapsed = time.perf_counter() - t0
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return stats, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("-c", type=int, default=64)
    ap.add_argument("--procs", type=int, default=os.cpu_count())
    a = ap.parse_args()
    stats, elapsed = asyncio.run(crawl(a.url, a.limit, a.c, a.procs))
    stats.update(impl="aiohttp", elapsed_s=round(elapsed, 6),
                 pages_per_s=round(stats["pages"] / elapsed, 1), rss_kib=vmhwm())
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
