"""Redis mass-insertion throughput: skyrec's socket loader vs ``redis-cli --pipe`` on the same RESP file,
each into a fresh scratch redis-server, in the same run.

Values are realistic ``rec`` values (50 items of ``[["i0001234", 0.12345],...]``, ~1 KB), written with the
same vectorised encoder compute_predictions uses (its encode time is reported too).
``python benchmarks/bench_redis_load.py [small|reference]``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SCALES = {"small": 200_000, "reference": 1_000_000}


def main(scale: str = "small") -> dict[str, Any]:
    import redis

    from skyrec.publish.resp import encode_rec_sets, fixed_width_fragments, load_files, redis_cli_pipe
    from skyrec.redis_local import temporary_redis

    n, k = SCALES[scale], 50
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="skyrec-bench-redis-") as tmp:
        path = Path(tmp) / "part-00000.resp"
        frags = fixed_width_fragments([f"i{j:07d}" for j in range(20_000)])
        encode_s = 0.0
        with open(path, "wb") as fh:
            for s in range(0, n, 4096):
                m = min(n, s + 4096) - s
                items = rng.integers(0, 20_000, size=(m, k))
                scores = (rng.random((m, k)) * 2).astype(np.float32)
                users = [str(u) for u in range(s, s + m)]
                t0 = time.perf_counter()
                data, _ = encode_rec_sets("skyrec:rec:bench:v1.1:", users, frags, items, scores,
                                          np.full(m, k), 5)
                encode_s += time.perf_counter() - t0
                fh.write(data)
        size = path.stat().st_size
        out: dict[str, Any] = {"benchmark": "redis_load", "scale": scale, "keys": n, "items_per_value": k,
                               "file_bytes": size, "encode_seconds": round(encode_s, 2),
                               "encode_keys_per_s": round(n / encode_s)}
        for name in ("skyrec_socket_loader", "redis_cli_pipe"):
            with temporary_redis(Path(tmp) / name) as server:
                if name == "redis_cli_pipe":
                    res = redis_cli_pipe(server.host, server.port, [path])
                else:
                    res = load_files(server.host, server.port, [path], expected=n)
                c = redis.Redis(host=server.host, port=server.port)
                dbsize = c.dbsize()
                used = c.info("memory")["used_memory"]
                c.close()
            out[name] = {"seconds": round(res.seconds, 2), "keys_per_s": round(n / res.seconds),
                         "mb_per_s": round(size / res.seconds / 1e6, 1), "dbsize_ok": dbsize == n,
                         "redis_used_memory_mb": round(used / 1e6)}
        out["ratio_skyrec_vs_redis_cli"] = round(out["redis_cli_pipe"]["seconds"] / out["skyrec_socket_loader"]["seconds"], 3)
    return out


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
