"""A light Streamlit client: one app session over one websocket, with the protobufs of ``streamlit.proto``.

What a browser tab does, minus the drawing: it opens ``/_stcore/stream``, asks for a script run with
the page's query string, and then changes widgets by sending their new values (``WidgetStates``),
reading the element deltas that come back. Used by the classroom load test and the soak benchmark
(many sessions from one process); 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import connect

from benchmarks._browser import LIVE_CHART_URL as LIVE_CHART  # app/live_chart.py's component name

TRACE = False
TITLE_RE = re.compile(r"N=(\d+), NFE=(\d+)")


@dataclass
class RunResult:
    """One script run as the client saw it."""

    sent: float
    first_msg: float | None = None
    chart_at: float | None = None  # the main chart's delta arrived
    finished: float | None = None
    title: str = ""
    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # error boxes and exceptions shown
    chart_bytes: int = 0

    @property
    def chart_ms(self) -> float | None:
        return None if self.chart_at is None else 1000 * (self.chart_at - self.sent)

    @property
    def total_ms(self) -> float | None:
        return None if self.finished is None else 1000 * (self.finished - self.sent)


class Session:
    """One app session. ``await s.open(query)``, then ``await s.set_widget(label, value)``."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        self.url = base_url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"
        self.timeout = timeout
        self.ws = None
        self.query = ""
        self.page_hash = ""
        self.pages: dict[str, str] = {}  # url path -> page script hash
        self.widgets: dict[str, tuple[str, str]] = {}  # label -> (widget id, kind)
        self.options: dict[str, list[str]] = {}  # selectbox label -> options
        self.values: dict[str, object] = {}  # widget id -> last value we sent
        self.session_id = ""

    async def open(self, query: str = "", page: str = "") -> RunResult:
        self.ws = await connect(self.url, subprotocols=["streamlit"], max_size=None, open_timeout=30)
        self.query = query
        return await self.rerun(page=page)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    def _back(self, widget_states: dict[str, tuple[str, object]] | None = None, page: str = "") -> bytes:
        msg = BackMsg()
        rs = msg.rerun_script
        rs.query_string = self.query
        if page:
            rs.page_script_hash = self.pages.get(page, "")
            rs.page_name = page
        elif self.page_hash:
            rs.page_script_hash = self.page_hash
        for wid, (kind, value) in (widget_states or {}).items():
            w = rs.widget_states.widgets.add()
            w.id = wid
            if kind == "trigger":
                w.trigger_value = bool(value)
            elif kind == "bool":
                w.bool_value = bool(value)
            elif kind == "double_array":
                w.double_array_value.data.extend([float(v) for v in value])  # type: ignore[union-attr]
            elif kind == "int":
                w.int_value = int(value)  # type: ignore[arg-type]
            elif kind == "double":
                w.double_value = float(value)  # type: ignore[arg-type]
            elif kind == "string":
                w.string_value = str(value)
            else:
                raise ValueError(kind)
        return msg.SerializeToString()

    async def rerun(
        self, widget_states: dict[str, tuple[str, object]] | None = None, page: str = ""
    ) -> RunResult:
        assert self.ws is not None
        res = RunResult(sent=time.perf_counter())
        await self.ws.send(self._back(widget_states, page))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                res.errors.append("timeout")
                return res
            raw = await asyncio.wait_for(self.ws.recv(), left)
            now = time.perf_counter()
            if res.first_msg is None:
                res.first_msg = now
            fm = ForwardMsg.FromString(raw)
            kind = fm.WhichOneof("type")
            if TRACE:
                sub = fm.delta.new_element.WhichOneof("type") if kind == "delta" else ""
                print(f"  {1000 * (now - res.sent):7.1f} ms {kind} {sub} {len(raw)}")
            if kind == "new_session":
                self.session_id = fm.new_session.initialize.session_id
                self.page_hash = fm.new_session.page_script_hash
                for p in fm.new_session.app_pages:
                    self.pages[p.url_pathname] = p.page_script_hash
            elif kind == "navigation":
                for p in fm.navigation.app_pages:
                    self.pages[p.url_pathname] = p.page_script_hash
                if fm.navigation.page_script_hash:
                    self.page_hash = fm.navigation.page_script_hash
            elif kind == "delta":
                self._read_delta(fm, res, now)
            elif kind == "script_finished" and fm.script_finished in (0, 1, 3):
                # 0 finished, 1 with compile error, 2 early for rerun, 3 fragment finished
                res.finished = now
                return res

    def _read_delta(self, fm: ForwardMsg, res: RunResult, now: float) -> None:
        d = fm.delta
        if d.WhichOneof("type") != "new_element":
            return
        el = d.new_element
        t = el.WhichOneof("type")
        spec = ""
        if t == "plotly_chart":
            spec = el.plotly_chart.spec
        elif t == "component_instance" and el.component_instance.component_name.endswith(LIVE_CHART):
            # the Flows page's live chart (app/live_chart.py): the figure's JSON as a bytes argument
            arg = next((a for a in el.component_instance.special_args if a.key == "figure"), None)
            spec = arg.bytes.decode() if arg is not None else ""
        if spec:
            # the title is in the layout, after the first frame's data: look there first (a figure is
            # megabytes; the load generator shares the server's cores)
            m = (TITLE_RE.search(spec, 0, 400_000) or TITLE_RE.search(spec)) if spec else None
            if m and res.chart_at is None:
                res.chart_at = now
                res.chart_bytes = len(spec)
                i = spec.rfind('"title"', 0, m.start())
                res.title = (
                    spec[i : m.end() + 200].split('"text":', 1)[-1].split('"')[1] if i >= 0 else m.group(0)
                )
        elif t == "exception":
            res.errors.append(f"exception: {el.exception.type}: {el.exception.message}")
        elif t == "alert":
            if el.alert.format == 1:  # ERROR
                res.errors.append(el.alert.body)
            res.texts.append(el.alert.body)
        elif t in ("markdown", "text", "caption"):
            body = getattr(el, t).body
            res.texts.append(body)
        elif t in ("slider", "number_input", "button", "checkbox", "selectbox", "radio", "text_input"):
            w = getattr(el, t)
            self.widgets[w.label] = (w.id, t)
            if t == "selectbox":
                self.options[w.label] = list(w.options)
        elif t == "toast":
            res.texts.append(el.toast.body)

    async def set_widget(self, label: str, value: object) -> RunResult:
        """Change one widget by its label (slider, number input, toggle, button click) and rerun."""
        wid, kind = self.widgets[label]
        if kind == "slider":
            state = ("double_array", [value])
        elif kind == "number_input":
            state = ("int", value) if isinstance(value, int) else ("double", value)
        elif kind == "button":
            state = ("trigger", True)
        elif kind == "checkbox":
            state = ("bool", value)
        else:
            raise ValueError(f"widget kind {kind} not supported")
        return await self.rerun({wid: state})
