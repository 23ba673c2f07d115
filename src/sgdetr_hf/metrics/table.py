"""The console table of metrics, one for every command that prints them (training, ``sgdetr evaluate``, ...)."""

from __future__ import annotations

from collections.abc import Mapping


def format_metrics_table(brief: Mapping[str, float], title: str = "metric") -> str:
    """A two-column plain-text table of ``name -> value`` (the ``brief`` metrics, in percent)."""
    width = max([len(title), *map(len, brief)])
    lines = [f"{title:<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{key:<{width}}  {value:6.2f}" for key, value in brief.items()]
    return "\n".join(lines)
