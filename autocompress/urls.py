"""Keep passwords in storage URLs / tracking URIs out of files, logs and MLflow params; links into
the MLflow UI."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact(url: str | None) -> str | None:
    """'postgresql://u:secret@h/db' -> 'postgresql://u:***@h/db'; other URLs unchanged."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{host}"))


def is_redacted(url: str | None) -> bool:
    return bool(url) and f":{MASK}@" in url


#: where `mlflow ui` serves when run without --host / --port
MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_ui_base(tracking_uri: str | None, ui: str = MLFLOW_UI) -> str:
    """Where the MLflow UI of a tracking URI is: the tracking server itself (http[s]://, without any
    user:password), else (sqlite, postgresql, a file store) `mlflow ui --backend-store-uri URI` on `ui`."""
    parts = urlsplit(tracking_uri or "")
    if parts.scheme in ("http", "https") and parts.hostname:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return ui.rstrip("/")


def mlflow_ui_links(tracking_uri: str | None, experiment_id: str, parent_run_id: str | None,
                    ui: str = MLFLOW_UI) -> dict[str, str]:
    """Direct links into the MLflow UI (3.17) for a search.

    `runs`: the experiment's runs table. MLflow 3.17 opens an experiment in its GenAI view (traces:
    empty here) unless the URL asks for `workflowType=machine_learning`; and it nests the trial runs,
    collapsed, under the search's parent run unless the table is sorted by something other than the
    start time, so the link sorts by `return_ratio`, best first: every trial is a row. `pareto`: the
    parent run's `pareto/pareto.html` (the 3-D front) in its Artifacts tab, beside the other Pareto files.

    >>> mlflow_ui_links("sqlite:///runs/x/mlflow.db", "1", "ab12")["pareto"]
    'http://127.0.0.1:5000/#/experiments/1/runs/ab12/artifacts/pareto/pareto.html?workflowType=machine_learning'
    """
    base = f"{mlflow_ui_base(tracking_uri, ui)}/#/experiments/{experiment_id}"
    links = {"runs": f"{base}/runs?workflowType=machine_learning&orderByKey=metrics.%60return_ratio%60"
                     "&orderByAsc=false"}
    if parent_run_id:
        links["pareto"] = f"{base}/runs/{parent_run_id}/artifacts/pareto/pareto.html?workflowType=machine_learning"
    return links
