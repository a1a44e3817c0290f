"""Run a notebook headless as Jupyter does and read back what a person would see in it."""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


@dataclass
class Executed:
    text: str  # every stream and text/plain output, concatenated
    figures: list[int]  # byte size of each inline PNG, in cell order
    figure_cells: int  # code cells that draw a figure (call plt.show())


def lake_files(lake: str | os.PathLike[str]) -> dict[str, int]:
    """Every file under ``lake`` with its modification time: equal before and after means read-only use."""
    return {str(p.relative_to(lake)): p.stat().st_mtime_ns for p in Path(lake).rglob("*") if p.is_file()}


def execute(name: str) -> Executed:
    """Execute ``notebooks/NAME`` with the environment of the caller (``RIVERLAKE_LAKE``, ``RIVERLAKE_FIGURES``)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text, figures, cells = [], [], 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cells += "plt.show()" in cell.source
        for out in cell.outputs:
            text.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
            png = out.get("data", {}).get("image/png")
            if png:
                figures.append(len(base64.b64decode(png)))
    return Executed("".join(text), figures, cells)
