"""Analysis in a separate process, so the CPU-heavy work never holds the GIL the SCP needs.

One long-lived child per analysis lane imports the analysis code once, warms it up on a small
phantom (`warm_up`: the libraries' first-use tables, paid once per process, not per study) and then
takes studies one at a time over a pipe (a study sent during the warm-up waits for it). It asks the
kernel to kill it when the node dies (PR_SET_PDEATHSIG), so a killed node leaves no analysis running
unseen; the job's lease then expires and the analysis runs again.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from neuropetrix.config.settings import Settings
from neuropetrix.engine.analysis_memory import collect_between_studies, keep_freed_memory
from neuropetrix.engine.clock import SYSTEM, Clock
from neuropetrix.logs import setup_logging
from neuropetrix.reports.source import OrderFacts

log = logging.getLogger("neuropetrix.analysis")
_PR_SET_PDEATHSIG = 1


class AnalysisFailed(Exception):
    """The analysis did not produce results. `permanent`: the inputs cannot be analysed."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass                                  # not Linux: the lease still recovers the job


def analyze_into(study_dir: Path, out_dir: Path, settings: Settings, params: dict | None = None,
                 hbys_order: OrderFacts | None = None, prior_dir: Path | None = None) -> dict:
    """Analyse `study_dir` and write every result file into `out_dir`, as the version the job's
    `params` ask for (engine/review_result.py), with a key image per lesion, and with the HBYS's
    `hbys_order` when the study was reconciled with one, compared with the study in `prior_dir`
    when the patient has one (engine/priors.py); returns a short summary."""
    from neuropetrix.config.settings import AnalysisSettings
    from neuropetrix.engine.offline import analyze_folder
    from neuropetrix.engine.review_result import order_of
    from neuropetrix.reports.keyimages import write_key_images

    order = order_of(params or {})
    analysis_settings = settings.analysis if not order.analysis else AnalysisSettings.model_validate(
        {**settings.analysis.model_dump(), **order.analysis})
    analysis = analyze_folder(study_dir, out_dir, analysis_settings, hbys=settings.hbys, order=order,
                              hbys_order=hbys_order, prior_dir=prior_dir, prior_optional=True)
    write_key_images(analysis.result, out_dir, analysis.pictures)
    result = analysis.result
    return {"lesions": len(result.lesions), "suv_max": result.suv_max, "tmtv_ml": result.tmtv_ml,
            "tlg_total": result.tlg_total, "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()},
            "version": order.version.version, "status": order.version.status,
            **({"response": result.response.category, "prior_study_uid": result.response.prior_study_uid}
               if result.response is not None else {})}


# The warm-up study: a coarse whole-body phantom (16 mm voxels, chest to abdomen) with one lesion, so
# that every report, the SEG included, is made once.
_WARM_LESION = ("warm-up", "liver", (-110.0, -30.0, 150.0), 60.0, 9.0)


def warm_up(settings: Settings) -> dict | None:
    """Pay every cost that is paid once per process before the first study rather than in it:
    the imports and what the libraries load on first use (highdicom's IOD tables, fhir.resources'
    model classes, hl7apy's message structures, matplotlib's fonts, reportlab's), by analysing a
    small phantom with `settings` into a temporary folder and writing every report. Its log lines
    are held back (they would name a study nobody sent); a failure is logged and leaves the process
    serving: the first study then pays what is left. Returns the warm-up study's summary (None if it failed)."""
    import tempfile

    from neuropetrix.phantoms.wholebody import LesionTruth, write_study

    started = time.perf_counter()
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="neuropetrix-warm-") as tmp:
            study, out = Path(tmp) / "study", Path(tmp) / "out"
            write_study(study, pet_matrix=32, z_range_mm=(40.0, 280.0), noise=0.0,
                        lesions=[LesionTruth(*_WARM_LESION)])
            summary = analyze_into(study, out, settings)
    except Exception as exc:                            # noqa: BLE001 — the process serves regardless
        logging.disable(logging.NOTSET)
        log.warning("analysis warm-up failed (%s: %s); the first study pays the first-use costs",
                    type(exc).__name__, exc)
        return None
    finally:
        logging.disable(logging.NOTSET)
    log.info("analysis process warmed up in %.1f s", time.perf_counter() - started)
    return summary


def _child(conn: Connection, log_level: str) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the node stops us; Ctrl-C goes to the node
    setup_logging(log_level)                          # the analysis's own log lines, in the node's format
    keep_freed_memory()
    warm_up(Settings())                               # imports and first-use tables, once, before the first study
    collect_between_studies()
    from neuropetrix.analysis.errors import AnalysisError
    from neuropetrix.reports.errors import ReportError

    while True:
        try:
            study_dir, out_dir, settings, params, hbys_order, prior_dir = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", analyze_into(study_dir, out_dir, settings, params, hbys_order, prior_dir)))
        except (AnalysisError, ReportError) as exc:
            conn.send(("refused", f"{type(exc).__name__}: {exc}"))
        except Exception as exc:                        # noqa: BLE001 — reported to the job, not lost
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        gc.collect()                                  # the study's garbage, once its reply is sent


class AnalysisProcess:
    """A child process that runs analyses one at a time; restarted after it dies or is stopped."""

    def __init__(self, log_level: str = "INFO", clock: Clock = SYSTEM) -> None:
        self.log_level = log_level
        self.clock = clock
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Connection:
        if self._proc is None or not self._proc.is_alive():
            parent, child = self._ctx.Pipe()
            self._proc = self._ctx.Process(target=_child, args=(child, self.log_level), name="neuropetrix-analysis",
                                           daemon=True)
            self._proc.start()
            child.close()
            self._conn = parent
        assert self._conn is not None
        return self._conn

    def warm(self) -> None:
        with self._lock:
            self._ensure()

    def run(self, study_dir: Path, out_dir: Path, settings: Settings, stop: threading.Event,
            params: dict | None = None, hbys_order: OrderFacts | None = None, prior_dir: Path | None = None) -> dict:
        """The summary of a finished analysis; AnalysisFailed otherwise (also when `stop` is set, or
        when it runs past engine.analysis_timeout: a hung analysis must not hold its lane for ever)."""
        deadline = self.clock.monotonic() + settings.engine.analysis_timeout
        with self._lock:
            conn = self._ensure()
            conn.send((study_dir, out_dir, settings, params, hbys_order, prior_dir))
            while not conn.poll(0.2):
                if stop.is_set():
                    self._kill()
                    raise AnalysisFailed("the node stopped during the analysis", permanent=False)
                if self.clock.monotonic() > deadline:
                    self._kill()
                    raise AnalysisFailed(f"the analysis took longer than {settings.engine.analysis_timeout:g} s "
                                         "and was stopped", permanent=False)
                if self._proc is None or not self._proc.is_alive():
                    code = None if self._proc is None else self._proc.exitcode
                    self._proc = None
                    raise AnalysisFailed(f"the analysis process died (exit code {code})", permanent=False)
            try:
                status, value = conn.recv()
            except EOFError:
                self._kill()
                raise AnalysisFailed("the analysis process died", permanent=False) from None
        if status == "ok":
            return value
        raise AnalysisFailed(value, permanent=status == "refused")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc = None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            if self._proc is not None:
                self._proc.join(2)
            self._kill()
