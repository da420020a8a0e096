import os, signal, sys
if os.environ.get("SC_DIAG_OUT"):
    import tracemalloc
    if os.environ.get("SC_TRACE"):
        tracemalloc.start(int(os.environ.get("SC_TRACE")))
    def _dump(signum, frame):
        import gc, collections, json
        out = {"modules": len(sys.modules)}
        c = collections.Counter(type(o).__name__ for o in gc.get_objects())
        out["gc_objects"] = sum(c.values())
        out["types"] = c.most_common(25)
        by = collections.Counter(m.split(".")[0] for m in sys.modules)
        out["modules_by_pkg"] = by.most_common(30)
        if os.environ.get("SC_MODULES"):  # every module the node has imported by now (what a running node needs)
            out["module_names"] = sorted(sys.modules)
        if os.environ.get("SC_LOADED"):  # which of these modules the running node has imported by now
            out["loaded"] = [m for m in os.environ["SC_LOADED"].split(":") if m in sys.modules]
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            def pkg(fn):
                for marker in ("site-packages/", "/p2pvpn/", "lib/python3.11/"):
                    if marker in fn:
                        rest = fn.split(marker, 1)[1]
                        return (marker.strip("/") + ":" if marker != "site-packages/" else "") + rest.split("/")[0]
                return fn
            agg = collections.Counter()
            for st in snap.statistics("filename"):
                agg[pkg(st.traceback[0].filename)] += st.size
            out["traced_total_mib"] = round(sum(agg.values())/2**20, 1)
            out["by_pkg_mib"] = [(k, round(v/2**20, 2)) for k, v in agg.most_common(30)]
            out["top_lines"] = [(str(st.traceback[0]), round(st.size/2**20, 2)) for st in snap.statistics("lineno")[:30]]
        if os.environ.get("SC_TRIM"):  # what glibc's malloc_trim(0) gives back now, in this process
            import ctypes
            def rollup():
                vals = {}
                for line in open("/proc/self/smaps_rollup").read().splitlines()[1:]:
                    key, _, rest = line.partition(":")
                    if rest.split() and rest.split()[0].isdigit():
                        vals[key] = int(rest.split()[0])
                return {k: round(vals[k] / 1024, 2) for k in ("Rss", "Anonymous", "Pss")}
            before = rollup()
            returned = ctypes.CDLL("libc.so.6").malloc_trim(0)
            out["malloc_trim"] = {"before_mib": before, "after_mib": rollup(), "returned": returned}
        with open(os.environ["SC_DIAG_OUT"] + f".{os.getpid()}.json", "w") as f:
            json.dump(out, f, indent=1)
    signal.signal(signal.SIGUSR1, _dump)

if os.environ.get("SC_WHO") and os.environ.get("SC_DIAG_OUT"):
    import traceback

    _who_targets = set(os.environ["SC_WHO"].split(":"))
    _who_seen: set[str] = set()

    class _WhoFinder:
        """Write the stack that first imports each package named in SC_WHO (colon-separated)."""

        def find_spec(self, name, path, target=None):
            top = name.split(".")[0]
            if top in _who_targets and top not in _who_seen:
                _who_seen.add(top)
                stack = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in traceback.extract_stack()[:-1]
                         if "<frozen" not in f.filename]
                with open(os.environ["SC_DIAG_OUT"] + f".{os.getpid()}.who", "a") as f:
                    f.write(f"== {name} <- " + " <- ".join(reversed(stack[-12:])) + "\n")
            return None

    sys.meta_path.insert(0, _WhoFinder())
