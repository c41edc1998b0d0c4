"""A model version's report: one self-contained HTML page of its lineage, metrics and plots.

data.py   what a report shows, as plain values (no protobuf, no transport)
plots.py  the charts, drawn with matplotlib's Agg canvas into PNG bytes
page.py   the HTML page, every chart embedded as a ``data:`` URI

matplotlib is the ``report`` extra: only ``regserve report`` imports this package, so
the server never loads it.
"""

from regserve.server.report.data import ReportData, ServingRow
from regserve.server.report.page import render_page

__all__ = ["ReportData", "ServingRow", "render_page"]
