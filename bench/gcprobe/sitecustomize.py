"""Loaded at start-up by a benchmarked Python server when bench/gcprobe is on PYTHONPATH.

Logs every garbage-collector pass of generation 2, and any pass of 2 ms or more, as
`<generation> <milliseconds> <collected>` lines to $GCPROBE_LOG: the harness reads
them to show how long the cyclic GC stops the event loop (a stop of N ms delays every
request in flight by N ms). The callback costs about a microsecond per pass.
"""
import gc
import os
import time

_path = os.environ.get("GCPROBE_LOG")
if _path:
    _log = open(_path, "a", buffering=1)
    _start = [0.0]

    def _probe(phase, info, _t=time.perf_counter, _start=_start, _log=_log):
        if phase == "start":
            _start[0] = _t()
            return
        ms = (_t() - _start[0]) * 1000
        if info["generation"] == 2 or ms >= 2.0:
            _log.write(f"{info['generation']} {ms:.2f} {info.get('collected', 0)}\n")

    gc.callbacks.append(_probe)
