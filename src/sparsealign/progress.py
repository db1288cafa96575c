"""Progress for long steps: a bar on a terminal, periodic plain lines otherwise (CI logs)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress("SAE m32", total=3136) as p: p.update(1, loss=0.01)``.

    On a terminal this is a tqdm bar with the latest values as a postfix; elsewhere it
    prints ``[sparsealign] <label>: 1200/3136 (38%) loss=0.0100`` at most every
    ``interval`` seconds, plus the final line.
    """

    def __init__(self, label: str, total: int, interval: float = 10.0, stream=None):
        self.label, self.total, self.interval = label, total, interval
        self.stream = stream or sys.stderr
        self.done, self.values = 0, {}
        self._last = time.monotonic()
        self._bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, file=self.stream, dynamic_ncols=True)

    def update(self, n: int = 1, **values) -> None:
        self.done += n
        self.values.update(values)
        if self._bar is not None:
            self._bar.update(n)
            if values:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in self.values.items()}, refresh=False)
        elif time.monotonic() - self._last >= self.interval:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        extra = "".join(f" {k}={v:.4g}" for k, v in self.values.items())
        print(f"[sparsealign] {self.label}: {self.done}/{self.total}{share}{extra}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
