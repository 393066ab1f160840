"""Peak resident memory of a code region (Linux): reset the process's high-water mark
(``/proc/self/clear_refs``), run, read ``VmHWM``. Model building is outside the region."""

import resource


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.mb``: peak RSS growth over the start, in MB."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._reset = True
        except OSError:
            self._reset = False
        self._start = _status_kb("VmRSS")
        self._start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        if self._reset:
            self.mb = (_status_kb("VmHWM") - self._start) / 1024
        else:  # no reset possible: growth of the lifetime maximum (a lower bound)
            self.mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start_max) / 1024
        return False
