"""A run's report on disk: JSON, a PNG of servers over carbon, and an HTML page."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from carbonscaler.control.controller import RunReport
from carbonscaler.outputs import OutputError, atomic_write, check_output_folder

__all__ = ["run_figure", "write_run_report"]


def run_figure(report: RunReport, slot_hours: float) -> Figure:
    """Servers run per slot (bars) over the actual carbon intensity (line)."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    n = len(report.servers_by_slot)
    hours = np.arange(n) * slot_hours
    ax.bar(
        hours,
        report.servers_by_slot,
        width=slot_hours * 0.9,
        align="edge",
        color="#4c9a2a",
        label="servers (time-weighted)",
    )
    ax.axvline(report.deadline_hours, color="#b22222", ls="--", lw=1, label="deadline")
    ax.set_xlabel("job hours since arrival")
    ax.set_ylabel("servers")
    ax2 = ax.twinx()
    ax2.step(hours, report.carbon_by_slot, where="post", color="#333333")
    ax2.set_ylabel("carbon intensity (gCO2eq/kWh)")
    ax.set_title(
        f"{report.name}: {report.emissions_g:.1f} g vs {report.agnostic_emissions_g:.1f} g "
        f"carbon-agnostic ({report.savings_pct:+.1f} %)"
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def write_run_report(report: RunReport, folder: Path, slot_hours: float) -> list[Path]:
    """Write ``report.json``, ``report.png`` and ``report.html`` into ``folder`` (created if
    missing), each to a temporary file first, then renamed.

    Raises:
        OutputError: If the folder or a file cannot be written.
    """
    check_output_folder(folder, "report folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create report folder {folder}: {exc.strerror or exc}") from exc
    payload = json.dumps(report.to_dict(), indent=2, default=float).encode()
    atomic_write(folder / "report.json", payload)
    fig = run_figure(report, slot_hours)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    png = buffer.getvalue()
    atomic_write(folder / "report.png", png)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in report.to_dict().items()
        if not isinstance(v, list)
    )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(report.name)}</title><style>body{{font-family:system-ui;"
        "max-width:1000px;margin:2em auto}}th{{text-align:left;padding-right:1em}}</style>"
        f"</head><body><h1>CarbonScaler run: {html.escape(report.name)}</h1>"
        f"<img alt='servers over carbon' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'><table>{rows}</table></body></html>"
    )
    atomic_write(folder / "report.html", page.encode())
    return [folder / "report.json", folder / "report.png", folder / "report.html"]
